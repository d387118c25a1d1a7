package fault

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrFault is matched by every error from Catch.
var ErrFault = errors.New("memory fault reading a mapped file: it changed or was truncated while mixq read it")

// Error is a fault at an address. Like the runtime's fault panics it has an
// Addr method, so a goroutine that catches a fault can raise it again on
// another one (see internal/par) and Catch there still recognises it.
type Error struct{ addr uintptr }

// Addr is the faulting address.
func (e *Error) Addr() uintptr { return e.addr }

func (e *Error) Error() string { return fmt.Sprintf("%v (address %#x)", ErrFault, e.addr) }

// Unwrap makes errors.Is(err, ErrFault) hold.
func (e *Error) Unwrap() error { return ErrFault }

// Catch runs fn on the calling goroutine with faults turned into an *Error.
// Any other panic goes on.
func Catch(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interface{ Addr() uintptr }); ok {
				err = &Error{addr: f.Addr()}
				return
			}
			panic(r)
		}
	}()
	fn()
	return nil
}
