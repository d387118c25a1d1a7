package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// GPTQLayer on a small layer: every stage's moment, GPTQ and RTN rows, the
// layer totals and the peak RSS; progress adds up to GPTQWork.
func TestGPTQLayer(t *testing.T) {
	var units atomic.Int64
	o := GPTQOptions{Hidden: 64, MLP: 160, Tokens: 100, GroupSize: 32, Progress: func(n int64) { units.Add(n) }}
	rows, err := GPTQLayer(context.Background(), o)
	require.NoError(t, err)
	ops := map[string]int{}
	for _, r := range rows {
		ops[r.Op]++
		if r.Op != "peak rss" {
			assert.Positive(t, r.Seconds, r.Op)
		}
		if strings.HasPrefix(r.Op, "gptq ") && r.Op != "gptq moment" {
			assert.Positive(t, r.VsRTN, r.Op)
			assert.Equal(t, "int4 g32", r.Precision, r.Op)
		}
	}
	assert.Equal(t, map[string]int{
		"gptq moment": 4, "gptq q_proj,k_proj,v_proj": 1, "rtn q_proj,k_proj,v_proj": 1, "gptq o_proj": 1, "rtn o_proj": 1,
		"gptq gate_proj,up_proj": 1, "rtn gate_proj,up_proj": 1, "gptq down_proj": 1, "rtn down_proj": 1,
		"gptq layer": 1, "gptq layer + moments": 1, "rtn layer": 1, "peak rss": 1,
	}, ops)
	// The layer's weights: 4·64² + 3·64·160 binary32 values.
	for _, r := range rows {
		if r.Op == "gptq layer" {
			assert.Equal(t, int64(4*(4*64*64+3*64*160)), r.Bytes)
		}
	}
	assert.InEpsilon(t, float64(GPTQWork(o)), float64(units.Load()), 0.05)
}

// Ctrl-C: a canceled context stops GPTQLayer with context.Canceled.
func TestGPTQLayerStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := GPTQLayer(ctx, GPTQOptions{Hidden: 64, MLP: 160, Tokens: 300, Progress: func(int64) { cancel() }})
	require.ErrorIs(t, err, context.Canceled)
}
