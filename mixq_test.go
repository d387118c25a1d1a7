package mixq_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// stories260K is the shared real model; tests that need it skip, visibly,
// when it is missing.
func stories260K(t *testing.T) string {
	t.Helper()
	p := filepath.Join("..", "shared", "testdata", "stories260K")
	if _, err := os.Stat(filepath.Join(p, "model.safetensors")); err != nil {
		t.Skipf("stories260K not available at %s: %v", p, err)
	}
	return p
}

func TestEndToEndStories260K(t *testing.T) {
	in := stories260K(t)
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	defer ck.Close()

	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	require.NoError(t, err)
	est := plan.Estimate(6)

	out := filepath.Join(t.TempDir(), "q")
	res, err := mixq.Quantize(context.Background(), ck, plan, out, mixq.Options{Backend: cpu.New(0)})
	require.NoError(t, err)
	// The estimate, from headers alone, is the size on disk to the byte.
	assert.Equal(t, est.MixedPrecisionBytes, res.WrittenBytes)
	assert.Equal(t, est.MixedPrecisionBytes, dirSize(t, out))

	m, err := mixq.OpenQuantized(out)
	require.NoError(t, err)
	defer m.Close()
	require.Len(t, m.Entries, len(ck.Tensors))

	// Tied embeddings: no lm_head, so the embedding is also the head: F16.
	e, ok := m.Lookup("model.embed_tokens.weight")
	require.True(t, ok)
	assert.Equal(t, "f16", e.Record.Precision)

	be := cpu.New(0)
	counts := map[string]int{}
	for _, e := range m.Entries {
		counts[e.Record.Precision]++
		orig, ok := ck.Lookup(e.Name)
		require.True(t, ok)
		want := make([]float32, orig.NumElements())
		require.NoError(t, orig.Float32(want))
		got := make([]float32, e.NumElements())
		require.NoError(t, m.Float32(e, got, be))
		switch p := e.Precision(); {
		case p.Quantized():
			assertWithinBound(t, e, m, want, got)
		case p == quant.F16:
			for i := range want {
				assert.InDelta(t, want[i], got[i], math.Abs(float64(want[i]))/1024+1e-7)
			}
		default:
			assert.Equal(t, want, got, e.Name)
		}
	}
	assert.Equal(t, map[string]int{"int8": 35, "f16": 1, "keep": 11}, counts)
}

// assertWithinBound checks |x − deq| ≤ s/2 (plus the rounding slack of the
// reciprocal, docs/ARITHMETIC.md) for every element, with s the stored scale of its group.
func assertWithinBound(t *testing.T, e *qformat.Entry, m *qformat.Model, want, got []float32) {
	t.Helper()
	_, scales, err := m.Codes(e)
	require.NoError(t, err)
	l := e.Layout
	for r := 0; r < l.Rows; r++ {
		for c := 0; c < l.Cols; c++ {
			s := float64(quant.ScaleValue(scales[r*l.GroupsPerRow()+c/l.GroupSize]))
			x := float64(want[r*l.Cols+c])
			d := math.Abs(x - float64(got[r*l.Cols+c]))
			if d > s/2+math.Abs(x)*0x1p-22 {
				t.Fatalf("%s[%d,%d]: |%g − %g| = %g exceeds scale/2 = %g", e.Name, r, c, x, got[r*l.Cols+c], d, s/2)
			}
		}
	}
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	n, err := mixq.DirBytes(dir)
	require.NoError(t, err)
	return n
}

func TestQuantizeIsDeterministicAndDequantizes(t *testing.T) {
	in := stories260K(t)
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	defer ck.Close()
	rule, err := policy.ParseRule(`mlp=int4`)
	require.NoError(t, err)
	opt := mixq.Options{Policy: mixq.StaticPolicy(ck, []policy.Rule{rule}), GroupSize: 32, MaxShardSize: 200_000}
	plan, err := mixq.PlanQuantization(ck, opt)
	require.NoError(t, err)
	require.Greater(t, len(plan.Layout.Shards), 1, "a small shard size must shard the output")

	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, o := range []string{a, b} {
		_, err := mixq.Quantize(context.Background(), ck, plan, o, opt)
		require.NoError(t, err)
	}
	for _, f := range plan.Layout.Files() {
		ba, err := os.ReadFile(filepath.Join(a, f))
		require.NoError(t, err)
		bb, err := os.ReadFile(filepath.Join(b, f))
		require.NoError(t, err)
		require.Equal(t, ba, bb, f)
	}
	assert.Equal(t, plan.Estimate(6).MixedPrecisionBytes, dirSize(t, a))

	// An existing output is never overwritten without Force.
	_, err = mixq.Quantize(context.Background(), ck, plan, a, opt)
	require.ErrorIs(t, err, quant.ErrInput)

	m, err := mixq.OpenQuantized(a)
	require.NoError(t, err)
	defer m.Close()
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		out := filepath.Join(dir, "deq-"+string(dt))
		require.NoError(t, mixq.Dequantize(context.Background(), m, out, dt, mixq.Options{}))
		d, err := mixq.Open(out)
		require.NoError(t, err)
		require.Len(t, d.Tensors, len(ck.Tensors))
		for _, tt := range d.Tensors {
			assert.Equal(t, dt, tt.DType)
			o, ok := ck.Lookup(tt.Name)
			require.True(t, ok)
			assert.Equal(t, o.Shape, tt.Shape)
		}
		if dt == safetensors.F32 {
			// F32 dequantization gives exactly what the reader gives.
			for _, e := range m.Entries {
				want := make([]float32, e.NumElements())
				require.NoError(t, m.Float32(e, want, cpu.New(1)))
				tt, _ := d.Lookup(e.Name)
				got := make([]float32, tt.NumElements())
				require.NoError(t, tt.Float32(got))
				require.Equal(t, want, got, e.Name)
			}
		}
		d.Close()
	}
}

func TestQuantizeRefusesItsInput(t *testing.T) {
	in := stories260K(t)
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	defer ck.Close()
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	require.NoError(t, err)
	_, err = mixq.Quantize(context.Background(), ck, plan, in, mixq.Options{Force: true})
	require.ErrorIs(t, err, quant.ErrInput)
	assert.FileExists(t, filepath.Join(in, "model.safetensors"))
}

// With --force the output's old contents are deleted, so an output that is
// the input seen through a symlink must be refused.
func TestQuantizeRefusesItsInputThroughASymlink(t *testing.T) {
	in := stories260K(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	require.NoError(t, os.MkdirAll(real, 0o755))
	for _, f := range []string{"model.safetensors", "config.json"} {
		b, err := os.ReadFile(filepath.Join(in, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(real, f), b, 0o644))
	}
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(real, link))
	ck, err := mixq.Open(link)
	require.NoError(t, err)
	defer ck.Close()
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	require.NoError(t, err)
	_, err = mixq.Quantize(context.Background(), ck, plan, real, mixq.Options{Force: true})
	require.ErrorIs(t, err, quant.ErrInput)
	assert.FileExists(t, filepath.Join(real, "model.safetensors"))
}

// An F16 overflow deep inside a large tensor is reported with its index in
// the tensor, past the first streaming block.
func TestF16OverflowNamesTheTensorIndex(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "m.safetensors")
	const rows, cols = 1 << 12, 1 << 11 // 8M elements: two blocks
	spec := safetensors.Spec{Name: "lm_head.weight", DType: safetensors.F32, Shape: []int64{rows, cols}}
	w, err := safetensors.Create(in, []safetensors.Spec{spec}, nil)
	require.NoError(t, err)
	buf := make([]byte, 4*cols)
	bad := rows*cols - 3
	for r := 0; r < rows; r++ {
		clear(buf)
		if r == bad/cols {
			binary.LittleEndian.PutUint32(buf[4*(bad%cols):], math.Float32bits(1e6))
		}
		require.NoError(t, w.Write(spec.Name, buf))
	}
	require.NoError(t, w.Close())
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	defer ck.Close()
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	require.NoError(t, err)
	_, err = mixq.Quantize(context.Background(), ck, plan, filepath.Join(dir, "q"), mixq.Options{})
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), fmt.Sprintf("index %d", bad))
	assert.Contains(t, err.Error(), "lm_head.weight")
}
