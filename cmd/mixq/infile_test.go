package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// runWithin runs the command line in-process and fails the test when it has
// not returned after 20 s: the defect guarded against is an open of a FIFO
// that waits for a writer forever (and ignores Ctrl-C while it waits).
func runWithin(t *testing.T, args ...string) (int, string) {
	t.Helper()
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, _, stderr := runCLI(t, args...)
		done <- result{code, stderr}
	}()
	select {
	case r := <-done:
		return r.code, r.stderr
	case <-time.After(20 * time.Second):
		t.Fatalf("mixq %q still running after 20 s", args)
		return 0, ""
	}
}

// Issue 9 follow-up: a FIFO as the weights file hung inspect, estimate and
// quantize forever; a FIFO as any flag file hung the command; a link to
// /dev/zero as --tokens or --rules ran out of memory. Every input must be a
// regular file: exit 2 within moments, naming the file and why.
func TestFIFOAndDeviceInputsAreRefused(t *testing.T) {
	tiny := tinyLlama(t)
	tmp := t.TempDir()
	fifo := filepath.Join(tmp, "fifo.json")
	require.NoError(t, unix.Mkfifo(fifo, 0o644))
	zero := filepath.Join(tmp, "zt.json")
	require.NoError(t, os.Symlink("/dev/zero", zero))

	// A checkpoint directory whose weights are a FIFO, config beside them.
	fdir := filepath.Join(tmp, "fifomodel")
	require.NoError(t, os.Mkdir(fdir, 0o755))
	cfg, err := os.ReadFile(filepath.Join(tiny, "config.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(fdir, "config.json"), cfg, 0o644))
	fweights := filepath.Join(fdir, "model.safetensors")
	require.NoError(t, unix.Mkfifo(fweights, 0o644))

	// A quantized model to export, and a tokenizer directory whose
	// tokenizer.json is a FIFO.
	q := filepath.Join(tmp, "q")
	code, _, stderr := runCLI(t, "quantize", tiny, "-o", q)
	require.Equal(t, 0, code, stderr)
	tkdir := filepath.Join(tmp, "tk")
	require.NoError(t, os.Mkdir(tkdir, 0o755))
	ftok := filepath.Join(tkdir, "tokenizer.json")
	require.NoError(t, unix.Mkfifo(ftok, 0o644))

	for _, tc := range []struct {
		name string
		args []string
		bad  string
	}{
		{"inspect fifo weights", []string{"inspect", fdir}, fweights},
		{"estimate fifo weights", []string{"estimate", fdir}, fweights},
		{"quantize fifo weights", []string{"quantize", fdir, "-o", filepath.Join(tmp, "out1")}, fweights},
		{"eval --tokens fifo", []string{"eval", "--model", tiny, "--tokens", fifo}, fifo},
		{"eval --tokens /dev/zero", []string{"eval", "--model", tiny, "--tokens", zero}, zero},
		{"estimate --rules fifo", []string{"estimate", tiny, "--rules", fifo}, fifo},
		{"estimate --rules /dev/zero", []string{"estimate", tiny, "--rules", zero}, zero},
		{"estimate --calib fifo", []string{"estimate", tiny, "--policy", "dynamic", "--calib", fifo}, fifo},
		{"estimate --calib-tokens fifo", []string{"estimate", tiny, "--policy", "dynamic", "--calib-tokens", fifo}, fifo},
		{"estimate --grads fifo", []string{"estimate", tiny, "--policy", "dynamic", "--grads", fifo}, fifo},
		{"export --vocab-from fifo", []string{"export", q, "-o", filepath.Join(tmp, "v.gguf"), "--format", "gguf", "--vocab-from", fifo}, fifo},
		{"export fifo tokenizer.json", []string{"export", q, "-o", filepath.Join(tmp, "t.gguf"), "--format", "gguf", "--tokenizer-dir", tkdir}, ftok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runWithin(t, tc.args...)
			requireRefused(t, code, stderr, tc.bad, "not a regular file")
		})
	}
}
