package main

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// --rounding gptq and search write the same bytes through the CPU and
// through the CUDA code path (the emulator), and at 1 and 2 threads; they
// change the codes (so the flag is not ignored) but not the sizes.
func TestRoundingBytesIdenticalAcrossBackendsAndThreads(t *testing.T) {
	in := stories(t)
	calib := []string{"--calib-sample", "2", "--calib-seq-len", "32"}
	for _, mode := range []string{"gptq", "search"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			sums := map[string]map[string]string{}
			for _, c := range []struct {
				be    string
				procs int
			}{{"cpu", 1}, {"cpu", 2}, {"cuda-sim", 2}} {
				name := c.be + "-" + string(rune('0'+c.procs))
				out := filepath.Join(dir, name)
				args := append([]string{"quantize", in, "-o", out, "--backend", c.be, "--rule", ".=int4", "--group-size", "32", "--rounding", mode}, calib...)
				old := runtime.GOMAXPROCS(c.procs)
				code, _, stderr := runCLI(t, args...)
				runtime.GOMAXPROCS(old)
				require.Equal(t, 0, code, stderr)
				sums[name] = dirSums(t, out)
			}
			require.NotEmpty(t, sums["cpu-1"])
			assert.Equal(t, sums["cpu-1"], sums["cpu-2"], "thread count changed the bytes")
			assert.Equal(t, sums["cpu-1"], sums["cuda-sim-2"], "backend changed the bytes")
			out := filepath.Join(dir, "rtn")
			code, _, stderr := runCLI(t, append([]string{"quantize", in, "-o", out, "--rule", ".=int4", "--group-size", "32", "--rounding", "rtn"}, calib...)...)
			require.Equal(t, 0, code, stderr)
			assert.NotEqual(t, dirSums(t, out)["model.safetensors"], sums["cpu-1"]["model.safetensors"], "%s wrote round-to-nearest's codes", mode)
		})
	}
}

func TestRoundingFlagErrors(t *testing.T) {
	in := stories(t)
	for _, args := range [][]string{
		{"--rounding", "gptq"}, // no calibration tokens
		{"--rounding", "best"},
	} {
		code, _, stderr := runCLI(t, append([]string{"quantize", in, "-o", filepath.Join(t.TempDir(), "q")}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "--rounding")
		assert.NotContains(t, stderr, "panic")
		assert.NotContains(t, stderr, "goroutine ")
	}
}

// Too few calibration tokens for the layers' widths: GPTQ still writes a
// valid checkpoint, with a notice per matrix saying why H was damped.
func TestRoundingGPTQNoticesFewTokens(t *testing.T) {
	in := stories(t)
	out := filepath.Join(t.TempDir(), "q")
	code, _, stderr := runCLI(t, "quantize", in, "-o", out, "--rule", ".=int4", "--calib-sample", "1", "--calib-seq-len", "8")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "mixq: notice: gptq: model.layers.0.self_attn.q_proj.weight: only 8 calibration tokens for 64 input channels")
	assert.Contains(t, stderr, "mixq: gptq: ")
	code, _, stderr = runCLI(t, "inspect", out)
	assert.Equal(t, 0, code, stderr)
}
