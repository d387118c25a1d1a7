package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
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
	root.Version = version()
	root.SetVersionTemplate("mixq {{.Version}}\n")
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
	for _, c := range root.Commands() {
		if ex, ok := examples[c.Name()]; ok && c.Example == "" {
			c.Example = ex
		}
	}
	return root
}

// examples shows each command at work, in --help.
var examples = map[string]string{
	"quantize": `  mixq quantize models/llama -o models/llama-mixq
  mixq quantize models/llama -o models/llama-6x --policy budget --target-ratio 6 --calib-tokens calib.json
  mixq quantize models/llama -o models/llama-dyn --policy dynamic --calib-sample 16 --report reports/llama`,
	"estimate": `  mixq estimate models/llama
  mixq estimate models/llama --policy budget --target-ratio 6 --json`,
	"inspect": `  mixq inspect models/llama-mixq
  mixq inspect models/llama/model.safetensors --json`,
	"dequantize": `  mixq dequantize models/llama-mixq -o models/llama-back --dtype bf16`,
	"synth": `  mixq synth --list
  mixq synth --preset tiny-moe --seed 7 -o /tmp/tiny-moe`,
	"bench": `  mixq bench --quick
  mixq bench --backend cpu --json > bench.json`,
	"eval": `  mixq eval --model models/llama --quantized models/llama-mixq --tokens eval_tokens.json
  mixq eval --model models/llama --sample 8 --seq-len 128 --seed 1 --json`,
	"calibrate": `  mixq calibrate models/llama --tokens calib_tokens.json -o calib.safetensors --format stats`,
	"analyze":   `  mixq analyze models/llama --calib calib.safetensors -o importance.json`,
	"devices": `  mixq devices
  mixq devices --json`,
	"export": `  mixq export models/llama-mixq -o llama.gguf --format gguf
  mixq export models/llama-mixq -o llama-ct --format compressed-tensors`,
}

// buildVersion is set by make build (-ldflags -X main.buildVersion=...,
// from git describe), for builds where the toolchain records no VCS
// information (-buildvcs=false).
var buildVersion string

// version is the module version and VCS revision the binary was built
// from, as the Go toolchain records them.
func version() string {
	if buildVersion != "" {
		return buildVersion + " " + runtime.Version()
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown build)"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " " + rev + modified
	}
	return v + " " + bi.GoVersion
}

// run executes the command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// SIGHUP (a closed terminal, a dropped ssh session) stops a run like
	// Ctrl-C, with its cleanup. A reader that goes away (mixq ... | head)
	// must not kill mixq halfway through writing: with SIGPIPE ignored a
	// write to it fails instead.
	signal.Ignore(syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var got atomic.Value
	go func() {
		select {
		case s := <-sigs:
			got.Store(s)
			cancel()
			// The default disposition comes back, so a second Ctrl-C kills
			// at once if cleaning up ever hangs; the next run removes what
			// that leaves (see internal/safeout).
			signal.Stop(sigs)
		case <-ctx.Done():
		}
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
	if s, ok := got.Load().(os.Signal); ok && errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "mixq: interrupted")
		if s == syscall.SIGHUP {
			return 128 + int(syscall.SIGHUP)
		}
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
