package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

func TestRunReportsEveryOp(t *testing.T) {
	rows, err := Run(Options{Backends: []quant.Backend{cpu.New(0)}, Budget: time.Millisecond, Shapes: []Shape{{64, 300}}})
	require.NoError(t, err)
	ops := map[string]int{}
	for _, r := range rows {
		ops[r.Op+"/"+r.Precision]++
		assert.Positive(t, r.Seconds, r.Op)
		assert.Positive(t, r.GBps, r.Op)
	}
	for _, want := range []string{"memcpy/", "matmul m=1/f32", "matmul m=16/f32", "quantize/int8", "quantize/int4", "dequantize/int4", "matmul m=1/int8", "matmul m=16/int4", "channel-stats/"} {
		assert.Equal(t, 1, ops[want], want)
	}
	// Every quantized matmul row is compared with the F32 anchor of the
	// same run and names its kernels.
	for _, r := range rows {
		if r.Backend == "cpu" && strings.HasPrefix(r.Op, "matmul") {
			assert.Positive(t, r.VsF32, r.Op)
			assert.Contains(t, r.Note, cpu.New(0).MatMulKernels(), r.Op)
		}
	}
	assert.Equal(t, 1.0, rows[0].VsCopy, "the baseline is its own reference")
}

func TestEvalRows(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 58M-parameter synthetic model; skipped in -short")
	}
	rows, err := EvalRows(cpu.New(0), true)
	require.NoError(t, err)
	require.Len(t, rows, 9, "calibration, prefill and decode of the stored, static and INT4 models")
	for _, r := range rows {
		assert.Positive(t, r.TokensPerSec, r.Op)
	}
}

func TestMedian(t *testing.T) {
	n := 0
	m := median(0, func() { n++ })
	assert.GreaterOrEqual(t, n, 4, "one warm-up and at least three timed runs")
	assert.GreaterOrEqual(t, m, 0.0)
}

// TestEvalModelRows times minillama (a real 6-layer Llama) as stored and
// quantized.
func TestEvalModelRows(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "testdata", "minillama")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no %s: %v", dir, err)
	}
	rows, err := EvalModelRows(cpu.New(0), dir, "minillama", true)
	require.NoError(t, err)
	require.Len(t, rows, 9)
	precs := map[string]int{}
	for _, r := range rows {
		assert.Positive(t, r.TokensPerSec, r.Op)
		precs[r.Precision]++
	}
	assert.Equal(t, map[string]int{"stored": 3, "static": 3, "int4 proj": 3}, precs)
}
