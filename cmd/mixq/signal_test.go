package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// minillamaDir is the 6-layer test Llama shared between checkouts.
const minillamaDir = "../../../shared/testdata/minillama"

func requireMinillama(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(minillamaDir, "model.safetensors")); err != nil {
		t.Skipf("minillama test model not available at %s: %v", minillamaDir, err)
	}
	return minillamaDir
}

// interrupted is what became of a child process sent a signal.
type interrupted struct {
	code           int
	took           time.Duration // from the signal to the exit
	stdout, stderr string
}

// interrupt starts the mixq binary with args, waits until its stderr shows
// a line containing ready (or, when ready is "", for delay), sends sig and
// waits for the exit. A child still running 10 s after the signal is killed
// and the test fails.
func interrupt(t *testing.T, bin string, sig syscall.Signal, ready string, delay time.Duration, args ...string) interrupted {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var (
		mu     sync.Mutex
		stderr strings.Builder
		seen   = make(chan struct{})
		once   sync.Once
		copied = make(chan struct{})
	)
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if ready != "" && strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(seen) })
			}
		}
	}()
	if ready != "" {
		select {
		case <-seen:
		case <-copied:
			t.Fatalf("mixq %v exited before printing %q", args, ready)
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("mixq %v did not print %q within a minute", args, ready)
		}
	} else {
		time.Sleep(delay)
	}
	sent := time.Now()
	require.NoError(t, cmd.Process.Signal(sig), "the child is still running when the signal is sent")
	exited := make(chan error, 1)
	go func() {
		<-copied // Wait closes the pipe: read it to the end first
		exited <- cmd.Wait()
	}()
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("mixq %v still running 10 s after %v", args, sig)
	}
	took := time.Since(sent)
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, werr)
	}
	mu.Lock()
	defer mu.Unlock()
	return interrupted{code: code, took: took, stdout: stdout.String(), stderr: stderr.String()}
}

// requireStoppedClean checks the rules for an interrupted run: exit 130
// within a few seconds of the signal, "interrupted" and not Go's "context
// canceled", no panic trace, no result printed, and nothing in out (the
// output's directory, empty before the run): no output, no temporary.
func requireStoppedClean(t *testing.T, r interrupted, out string) {
	t.Helper()
	assert.Equal(t, 130, r.code, "exit code; stderr:\n%s", r.stderr)
	// The goal is a stop within a second (the logged times are 1-500 ms on
	// the 2-core machine); the bound is looser so that a CI machine busy
	// with other packages' tests does not fail it. What no loaded machine
	// can fake is the exit code and the empty directory below.
	assert.Less(t, r.took, 5*time.Second, "stops within a second or so of the signal")
	assert.Contains(t, r.stderr, "mixq: interrupted")
	assert.NotContains(t, r.stderr, "context canceled")
	assert.NotContains(t, r.stderr, "panic")
	assert.NotContains(t, r.stderr, "goroutine ")
	assert.Empty(t, r.stdout, "no result is printed")
	ents, err := os.ReadDir(out)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.Empty(t, names, "nothing is left in the output's directory")
}

// TestInterruptStopsEveryLongPhase: issue 9, defect 3. A real child
// process gets SIGINT (once SIGTERM) in the middle of each long phase:
// the forward passes of eval, of calibrate (both formats), of sampling
// and of the built-in calibration, and the importance analysis of
// analyze, estimate --policy dynamic and quantize --policy budget. Each phase
// would run for many seconds more (eval of minillama's 163 sequences
// takes about a minute on two cores; the analysis of the seed model
// over a second), so a quick exit shows the phase itself noticed.
func TestInterruptStopsEveryLongPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, writes a 170 MB model and runs forward passes")
	}
	bin := safetyBinary(t)
	ml := requireMinillama(t)
	tokens := filepath.Join(ml, "eval_tokens.json")

	// The analysis of the seed model (4 of its 12 layers, 85M parameters)
	// takes over a second: long enough to be interrupted after its first
	// notice, which it prints before measuring anything.
	seed := filepath.Join(t.TempDir(), "seed")
	out, err := exec.Command(bin, "synth", "--preset", "seed", "--layers", "4", "-o", seed).CombinedOutput()
	require.NoError(t, err, string(out))
	const analysing = "gradient signal dropped"

	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		ready string
		args  func(out string) []string
	}{
		{"eval", syscall.SIGINT, "", func(out string) []string {
			return []string{"eval", "--model", ml, "--tokens", tokens, "--backend", "cpu", "--logits-out", filepath.Join(out, "logits.f32")}
		}},
		{"eval SIGTERM", syscall.SIGTERM, "", func(out string) []string {
			return []string{"eval", "--model", ml, "--quantized", ml, "--tokens", tokens, "--backend", "cpu", "--json"}
		}},
		{"eval sampling", syscall.SIGINT, "", func(out string) []string {
			return []string{"eval", "--model", seed, "--sample", "8", "--seq-len", "512", "--backend", "cpu"}
		}},
		{"calibrate", syscall.SIGINT, "", func(out string) []string {
			return []string{"calibrate", ml, "--tokens", tokens, "--backend", "cpu", "-o", filepath.Join(out, "acts.safetensors")}
		}},
		{"calibrate stats", syscall.SIGINT, "", func(out string) []string {
			return []string{"calibrate", ml, "--tokens", tokens, "--format", "stats", "--backend", "cpu", "-o", filepath.Join(out, "stats.safetensors")}
		}},
		{"estimate dynamic", syscall.SIGINT, analysing, func(out string) []string {
			return []string{"estimate", seed, "--policy", "dynamic", "--backend", "cpu"}
		}},
		{"estimate dynamic calibrating", syscall.SIGINT, "", func(out string) []string {
			return []string{"estimate", ml, "--policy", "dynamic", "--calib-tokens", tokens, "--backend", "cpu"}
		}},
		{"analyze", syscall.SIGINT, analysing, func(out string) []string {
			return []string{"analyze", seed, "--backend", "cpu", "-o", filepath.Join(out, "importance.json")}
		}},
		{"quantize dynamic sampling", syscall.SIGINT, "", func(out string) []string {
			return []string{"quantize", ml, "--policy", "dynamic", "--calib-sample", "8", "--calib-seq-len", "256", "--backend", "cpu", "-o", filepath.Join(out, "q")}
		}},
		{"quantize budget", syscall.SIGINT, analysing, func(out string) []string {
			return []string{"quantize", seed, "--policy", "budget", "--target-ratio", "6", "--backend", "cpu", "-o", filepath.Join(out, "q")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			r := interrupt(t, bin, tc.sig, tc.ready, time.Second, tc.args(out)...)
			t.Logf("exit %d %v after %v", r.code, tc.sig, r.took)
			requireStoppedClean(t, r, out)
		})
	}
}
