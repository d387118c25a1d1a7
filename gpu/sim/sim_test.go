package sim

import (
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/kernels"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/quant/quanttest"
	"github.com/stretchr/testify/require"
)

// The CUDA kernels, run by the emulator through the GPU driver, against the
// CPU reference: the whole conformance suite, bit for bit.
func TestConformance(t *testing.T) {
	b := New(gpu.Options{})
	defer b.Close()
	quanttest.TestBackend(t, b)
}

// A chunk of a few rows makes every tensor of the suite cross chunk and
// stream boundaries, so the pipeline's offsets and error positions are
// checked too.
func TestConformanceSmallChunks(t *testing.T) {
	b := New(gpu.Options{ChunkBytes: 3000})
	defer b.Close()
	quanttest.TestBackend(t, b)
}

func TestGolden(t *testing.T) {
	b := New(gpu.Options{})
	defer b.Close()
	quanttest.TestGolden(t, b, filepath.Join("..", "..", "testdata", "golden"))
}

// Both matmul paths with and without vector loads, at the sizes where the
// tiles and the lanes wrap.
func TestMatMulPaths(t *testing.T) {
	b := New(gpu.Options{})
	defer b.Close()
	for _, l := range []quant.Layout{
		{Rows: 9, Cols: 1024, GroupSize: 32, Precision: quant.INT4}, // vec, 32 groups
		{Rows: 9, Cols: 1032, GroupSize: 8, Precision: quant.INT4},  // vec, 129 groups
		{Rows: 5, Cols: 1028, GroupSize: 4, Precision: quant.INT8},  // vec INT8
		{Rows: 5, Cols: 1030, GroupSize: 10, Precision: quant.INT4}, // no vec
		{Rows: 17, Cols: 8200, GroupSize: 8, Precision: quant.INT4}, // staged, 1025 groups: 33 chunks
	} {
		for _, m := range []int{1, 2, 3, 8, 9, 17, 33} {
			c := newMatMulCase(t, "paths", l, m)
			got := make([]float32, m*l.Rows)
			require.NoError(t, b.MatMul(got, c.x, m, c.packed, c.scales, l))
			quanttest.RequireEqualBits(t, gpu.PlanMatMul(m, l).Kernel, got, c.want)
		}
	}
}

// More rows than gridDim.y can hold (65535): the row loops of the
// elementwise kernels must stride, and the fused kernels' grid must cap.
func TestManyRows(t *testing.T) {
	if testing.Short() {
		t.Skip("65536+ emulated blocks (-short)")
	}
	b := New(gpu.Options{ChunkBytes: 1 << 20})
	defer b.Close()
	ref := cpu.New(1)
	for _, l := range []quant.Layout{
		{Rows: 70001, Cols: 3, GroupSize: 3, Precision: quant.INT4}, // odd groups: scales, then the byte kernel
		{Rows: 70001, Cols: 4, GroupSize: 2, Precision: quant.INT8}, // fused
	} {
		r := quanttest.NewRand(quanttest.Seed(t), "many rows")
		w := quanttest.Weights(r, l)
		want := make([]byte, l.PackedBytes())
		wantS := make([]uint16, l.NumScales())
		require.NoError(t, ref.QuantizeGroups(want, wantS, w, l))
		got := make([]byte, l.PackedBytes())
		gotS := make([]uint16, l.NumScales())
		require.NoError(t, b.QuantizeGroups(got, gotS, w, l))
		quanttest.RequireEqualBits(t, "scales", gotS, wantS)
		quanttest.RequireEqualBits(t, "packed", got, want)
		deqWant := make([]float32, l.Elements())
		deqGot := make([]float32, l.Elements())
		require.NoError(t, ref.Dequantize(deqWant, want, wantS, l))
		require.NoError(t, b.Dequantize(deqGot, got, gotS, l))
		quanttest.RequireEqualBits(t, "dequantized", deqGot, deqWant)
	}
}

// Where the staged GEMV applies, the L1 GEMV must give the same bits too
// (the benchmarks time both), and both must match the reference.
func TestGEMVVariantsAgree(t *testing.T) {
	dev := NewDevice()
	defer dev.Close()
	for _, l := range []quant.Layout{
		{Rows: 19, Cols: 4096, GroupSize: 128, Precision: quant.INT4},
		{Rows: 9, Cols: 2048, GroupSize: 64, Precision: quant.INT8},
	} {
		for _, m := range []int{1, 2} {
			c := newMatMulCase(t, "variants", l, m)
			p := gpu.PlanMatMul(m, l)
			require.Equal(t, kernels.GEMVStaged, p.Kernel)
			for _, k := range []string{kernels.GEMVStaged, kernels.GEMV} {
				p.Kernel = k
				got := runPlan(t, dev, p, c.x, m, c.packed, c.scales, l)
				quanttest.RequireEqualBits(t, k, got, c.want)
			}
		}
	}
}

func runPlan(t *testing.T, dev *Device, p gpu.MatMulPlan, x []float32, m int, packed []byte, scales []uint16, l quant.Layout) []float32 {
	t.Helper()
	alloc := func(n int) gpu.Ptr {
		ptr, err := dev.Alloc(n)
		require.NoError(t, err)
		return ptr
	}
	dx, dp, ds, dy := alloc(4*len(x)), alloc(len(packed)), alloc(2*len(scales)), alloc(4*m*l.Rows)
	defer func() {
		for _, ptr := range []gpu.Ptr{dx, dp, ds, dy} {
			require.NoError(t, dev.Free(ptr))
		}
	}()
	require.NoError(t, dev.Upload(dx, gpu.BytesOf(x), 0))
	require.NoError(t, dev.Upload(dp, packed, 0))
	require.NoError(t, dev.Upload(ds, gpu.BytesOf(scales), 0))
	require.NoError(t, p.Launch(dev, 0, dx, m, dp, ds, l, dy))
	y := make([]float32, m*l.Rows)
	require.NoError(t, dev.Download(gpu.BytesOf(y), dy, 0))
	return y
}

// matMulCase is a quantized W, activations and the reference's y = x·Wᵀ.
type matMulCase struct {
	packed  []byte
	scales  []uint16
	x, want []float32
}

func newMatMulCase(t *testing.T, label string, l quant.Layout, m int) matMulCase {
	t.Helper()
	ref := cpu.New(1)
	r := quanttest.NewRand(quanttest.Seed(t), label)
	w := quanttest.Weights(r, l)
	c := matMulCase{packed: make([]byte, l.PackedBytes()), scales: make([]uint16, l.NumScales())}
	require.NoError(t, ref.QuantizeGroups(c.packed, c.scales, w, l))
	c.x = quanttest.Activations(r, m, l.Cols)
	c.want = make([]float32, m*l.Rows)
	require.NoError(t, ref.MatMul(c.want, c.x, m, c.packed, c.scales, l))
	return c
}
