// Package stop turns a done context into the error a long phase returns,
// so that every phase reports a cancellation the same way: an error for
// which errors.Is(err, context.Canceled) (or context.DeadlineExceeded)
// holds and which also carries the cause, such as the signal received.
package stop
