//go:build !cgo || !linux

package probe

import "errors"

// Run reports that this build cannot probe: the CUDA backend needs cgo on
// Linux (dlopen and plugins).
func Run() Result {
	return Result{Err: errors.New("this mixq was built without cgo or not for Linux: no CUDA backend")}
}
