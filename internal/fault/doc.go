// Package fault turns a fault on a memory-mapped read into an error.
//
// mixq maps its inputs. When a file shrinks or changes under the mapping
// while mixq reads it (another program rewrites it, a network file system
// drops it), the read takes SIGBUS, which by default kills the process with
// its temporaries still on disk. runtime/debug.SetPanicOnFault turns that
// fault into a panic on the goroutine that read, and Catch turns the panic
// into an error, so the usual cleanup runs and the user is told which file
// is at fault. The setting is per goroutine, so every goroutine that reads
// mapped memory has to go through Catch.
package fault
