package stop

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestErr(t *testing.T) {
	assert.NoError(t, Err(context.Background()), "a live context is no error")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.Same(t, context.Canceled, Err(ctx), "no cause: the plain error")

	// A cause that does not wrap Canceled is kept beside it.
	ctx, cancelCause := context.WithCancelCause(context.Background())
	cause := errors.New("user pressed stop")
	cancelCause(cause)
	err := Err(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, cause)

	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	assert.ErrorIs(t, Err(ctx), context.DeadlineExceeded)
}

// TestErrSignal: signal.NotifyContext's cause names the signal and is
// itself a context.Canceled, so it is returned as it is.
func TestErrSignal(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGUSR1)
	defer stop()
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGUSR1))
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGUSR1 did not cancel the context")
	}
	err := Err(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "signal")
}
