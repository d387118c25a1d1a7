package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/bench"
)

// TestBenchMatMulOnly runs the matmul rows on a small shape: the F32 anchor
// and each quantized matmul, compared with it, and nothing else.
func TestBenchMatMulOnly(t *testing.T) {
	code, stdout, stderr := runCLI(t, "bench", "--backend", "cpu", "--quick", "--matmul-only", "--shape", "96x300", "--json")
	require.Equal(t, 0, code, stderr)
	var rows []bench.Row
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	ops := map[string]bool{}
	for _, r := range rows {
		assert.Equal(t, "96x300", r.Shape)
		ops[r.Op+"/"+r.Precision] = true
		if r.Backend == "cpu" {
			assert.Positive(t, r.VsF32, "%s %s", r.Op, r.Precision)
		}
	}
	assert.Equal(t, map[string]bool{"memcpy/": true, "matmul m=1/f32": true, "matmul m=1/int8": true, "matmul m=1/int4": true}, ops)
}

// TestBenchBadFlags: a malformed --shape or --model is an input error
// (exit 2) that names the flag, never a panic.
func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--backend", "cpu", "--shape", "12"},
		{"bench", "--backend", "cpu", "--shape", "0x5"},
		{"bench", "--backend", "cpu", "--shape", "4x5x6"},
		{"bench", "--backend", "cpu", "--model", t.TempDir()},
	} {
		code, _, stderr := runCLI(t, args...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, args[3], args)
		assert.NotContains(t, stderr, "panic", args)
		assert.NotContains(t, stderr, "goroutine ", args)
	}
}

// TestBenchGPTQ runs the GPTQ rows on a small layer: JSON rows with the
// RTN anchor, and the flags that do not combine with --gptq refused.
func TestBenchGPTQ(t *testing.T) {
	code, stdout, stderr := runCLI(t, "bench", "--backend", "cpu", "--gptq", "--gptq-shape", "64x160", "--gptq-tokens", "80", "--gptq-group", "32", "--json")
	require.Equal(t, 0, code, stderr)
	var rows []bench.Row
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	ops := map[string]bool{}
	for _, r := range rows {
		ops[r.Op] = true
	}
	for _, want := range []string{"gptq moment", "gptq down_proj", "rtn down_proj", "gptq layer", "rtn layer", "peak rss"} {
		assert.True(t, ops[want], want)
	}
	assert.Contains(t, stderr, "only 80 calibration tokens", "the notices of the singular H")
	for _, args := range [][]string{
		{"bench", "--backend", "cpu", "--gptq", "--gptq-shape", "64"},
		{"bench", "--backend", "cpu", "--gptq", "--gptq-tokens", "0"},
		{"bench", "--backend", "cpu", "--gptq", "--gptq-group", "0"},
		{"bench", "--backend", "cpu", "--gptq", "--matmul-only"},
	} {
		code, _, stderr := runCLI(t, args...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, args[4], args)
		assert.NotContains(t, stderr, "panic", args)
		assert.NotContains(t, stderr, "goroutine ", args)
	}
}
