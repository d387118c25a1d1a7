//go:build race

package backend

// A plugin must be built with -race to load into a -race binary.
const raceEnabled = true
