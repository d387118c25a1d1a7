package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/quant"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1   // a runtime failure or the environment (disk, permissions)
	exitUsage       = 2   // bad usage or bad input
	exitInterrupted = 130 // stopped by SIGINT or SIGTERM, as a shell reports 128+SIGINT
)

// usageError marks errors of command-line usage.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "mixq",
		Short: "Quantize model checkpoints to mixed INT4/INT8/F16 precision",
		Long: `mixq quantizes Hugging Face safetensors checkpoints to mixed precision:
group-wise absmax INT8 and INT4 (two weights per byte) with F16 scales, and F16
kept for sensitive tensors, chosen per tensor by a policy.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	notices = stderr
	safeout.Notice = func(msg string) { fmt.Fprintln(stderr, "mixq: "+msg) }
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newQuantizeCmd(),
		newEstimateCmd(),
		newInspectCmd(),
		newDequantizeCmd(),
		newSynthCmd(),
		newBenchCmd(),
		newEvalCmd(),
		newCalibrateCmd(),
		newAnalyzeCmd(),
		newDevicesCmd(),
		newExportCmd(),
	)
	return root
}

// run executes the command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal the default disposition comes back, so a
		// second Ctrl-C kills at once if cleaning up ever hangs; the next
		// run removes what that leaves (see internal/safeout).
		<-ctx.Done()
		stop()
	}()
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	var err error
	// The last line of defence for reads of mapped inputs on this goroutine
	// (the pipelines catch their own, naming the tensor): a file changed
	// under mixq is an error, not a SIGBUS, and deferred cleanups run.
	if ferr := fault.Catch(func() { err = root.ExecuteContext(ctx) }); ferr != nil {
		err = quant.InputError(ferr)
	}
	if err == nil {
		return exitOK
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "mixq: interrupted")
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "mixq: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, quant.ErrInput), isCobraUsage(err):
		return exitUsage
	}
	return exitFailure
}

// isCobraUsage recognises cobra's own argument errors, which are plain errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "requires at most", "required flag", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
