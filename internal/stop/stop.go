package stop

import (
	"context"
	"errors"
	"fmt"
)

// Err is nil while ctx is not done. Once it is, Err is context.Cause(ctx)
// when that already wraps ctx.Err() (signal.NotifyContext's cause does),
// else ctx.Err() and the cause joined.
func Err(ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		return nil
	}
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, err) {
		if cause == nil {
			return err
		}
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}
