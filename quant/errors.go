package quant

import (
	"errors"
	"fmt"
)

// NonFiniteError reports a NaN or ±Inf input. Index is the flat, row-major
// index of the first (lowest-index) offending element.
type NonFiniteError struct {
	Index int
	Value float32
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("non-finite value %v at index %d", e.Value, e.Index)
}

// ScaleOverflowError reports a group whose scale does not fit binary16
// (its absolute maximum divided by QMax exceeds 65504).
type ScaleOverflowError struct {
	Row, Group int
	AbsMax     float32
}

func (e *ScaleOverflowError) Error() string {
	return fmt.Sprintf("scale overflows F16: row %d group %d has absmax %g", e.Row, e.Group, e.AbsMax)
}

// TensorError attaches the tensor name (and file, when known) to an error,
// so that every message a user sees says where the problem is.
type TensorError struct {
	File   string
	Tensor string
	Err    error
}

func (e *TensorError) Error() string {
	if e.File != "" {
		return fmt.Sprintf("%s: tensor %q: %v", e.File, e.Tensor, e.Err)
	}
	return fmt.Sprintf("tensor %q: %v", e.Tensor, e.Err)
}

func (e *TensorError) Unwrap() error { return e.Err }

// ErrInput marks errors caused by bad input (as opposed to a runtime failure),
// so that the command line can exit with code 2 for them.
var ErrInput = errors.New("bad input")

// InputError wraps err so that errors.Is(err, ErrInput) holds.
func InputError(err error) error {
	if err == nil {
		return nil
	}
	return &inputError{err}
}

type inputError struct{ err error }

func (e *inputError) Error() string   { return e.err.Error() }
func (e *inputError) Unwrap() []error { return []error{e.err, ErrInput} }
