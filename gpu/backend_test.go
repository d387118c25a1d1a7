package gpu

import (
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/kernels"
	"github.com/mixq/mixq/quant"
)

// recorder is a Device that records launches and copies without running
// anything, for checking what the driver asks of a device.
type recorder struct {
	next     Ptr
	live     map[Ptr]int
	launches []launch
	fail     error
	words    [2]uint64 // what the error words read back as
}

type launch struct {
	name  string
	grid  Dim3
	block int
	s     Stream
	args  []uint64
}

func newRecorder() *recorder {
	return &recorder{next: 4096, live: map[Ptr]int{}, words: [2]uint64{math.MaxUint64, math.MaxUint64}}
}

func (r *recorder) Name() string { return "rec" }
func (r *recorder) Alloc(n int) (Ptr, error) {
	p := r.next
	r.next += Ptr(n+255) &^ 255
	r.live[p] = n
	return p, nil
}
func (r *recorder) Free(p Ptr) error {
	if _, ok := r.live[p]; !ok {
		return errors.New("double free")
	}
	delete(r.live, p)
	return nil
}
func (r *recorder) Upload(Ptr, []byte, Stream) error { return nil }
func (r *recorder) Download(dst []byte, _ Ptr, _ Stream) error {
	if len(dst) == 16 { // the error words
		copy(dst, BytesOf(r.words[:]))
	}
	return nil
}
func (r *recorder) Fill(Ptr, byte, int, Stream) error { return nil }
func (r *recorder) Launch(name string, grid Dim3, block int, s Stream, args ...uint64) error {
	r.launches = append(r.launches, launch{name, grid, block, s, append([]uint64(nil), args...)})
	return r.fail
}
func (r *recorder) Sync(Stream) error { return nil }
func (r *recorder) Close() error      { return nil }

func TestPlanMatMul(t *testing.T) {
	i4 := quant.Layout{Rows: 100, Cols: 4096, GroupSize: 128, Precision: quant.INT4}
	p := PlanMatMul(1, i4)
	require.Equal(t, kernels.GEMVStaged, p.Kernel)
	require.True(t, p.Vec)
	require.Equal(t, Dim3{13, 1, 1}, p.Grid) // 100 rows, 8 warps a block
	require.Equal(t, kernels.GEMVStaged, PlanMatMul(2, i4).Kernel)
	// Three rows of 32 padded groups of 128 exceed the 48 KiB of shared memory.
	require.Equal(t, kernels.GEMV, PlanMatMul(3, i4).Kernel)
	require.Equal(t, kernels.GEMVStaged, PlanMatMul(8, quant.Layout{Rows: 1, Cols: 4096, GroupSize: 32, Precision: quant.INT4}).Kernel)
	p = PlanMatMul(8, i4)
	require.Equal(t, kernels.GEMV, p.Kernel)
	// Without vector loads the staged kernel does not apply.
	require.Equal(t, kernels.GEMV, PlanMatMul(1, quant.Layout{Rows: 1, Cols: 4100, GroupSize: 4, Precision: quant.INT4}).Kernel)
	p = PlanMatMul(9, i4)
	require.Equal(t, kernels.GEMM, p.Kernel)
	require.Equal(t, 1, p.Grid.Y)
	p = PlanMatMul(64, i4)
	require.Equal(t, 4, p.Grid.Y)
	p = PlanMatMul(65, i4)
	require.Equal(t, 5, p.Grid.Y)
	// Vector loads need whole 32-bit code words and 16-byte x rows.
	require.False(t, PlanMatMul(1, quant.Layout{Rows: 1, Cols: 4100, GroupSize: 4, Precision: quant.INT4}).Vec)
	require.True(t, PlanMatMul(1, quant.Layout{Rows: 1, Cols: 4100, GroupSize: 4, Precision: quant.INT8}).Vec)
	require.False(t, PlanMatMul(1, quant.Layout{Rows: 1, Cols: 4102, GroupSize: 2, Precision: quant.INT8}).Vec)
}

// Chunks alternate streams, every kernel argument is a 64-bit word in the
// kernel's order, and row offsets reach the error words.
func TestPipelineChunks(t *testing.T) {
	rec := newRecorder()
	b := New(rec, Options{ChunkBytes: 4 * 1000 * 10}) // 10 rows of 1000 columns
	l := quant.Layout{Rows: 35, Cols: 1000, GroupSize: 128, Precision: quant.INT4}
	require.NoError(t, b.QuantizeGroups(make([]byte, l.PackedBytes()), make([]uint16, l.NumScales()), make([]float32, l.Elements()), l))
	require.Len(t, rec.launches, 4)
	for i, la := range rec.launches {
		require.Equal(t, kernels.QuantizeGroups, la.name)
		require.Equal(t, Stream(i%2), la.s)
		require.Len(t, la.args, 9)
		rows := min(10, 35-10*i)
		require.Equal(t, uint64(rows), la.args[1], "rows")
		require.Equal(t, uint64(1000), la.args[2], "cols")
		require.Equal(t, uint64(128), la.args[3], "group size")
		require.Equal(t, uint64(4), la.args[4], "bits")
		require.Equal(t, uint64(10*i), la.args[5], "row0")
		require.Equal(t, blockThreads, la.block)
	}
	// Odd INT4 groups cannot be fused: scales, then the byte kernel.
	rec.launches = nil
	l.GroupSize = 7
	require.NoError(t, b.QuantizeGroups(make([]byte, l.PackedBytes()), make([]uint16, l.NumScales()), make([]float32, l.Elements()), l))
	require.Equal(t, kernels.GroupScales, rec.launches[0].name)
	require.Equal(t, kernels.Quantize, rec.launches[len(rec.launches)-1].name)
	require.NoError(t, b.FreeBuffers())
	require.Empty(t, rec.live, "every buffer freed")
}

func TestErrorWords(t *testing.T) {
	rec := newRecorder()
	b := New(rec, Options{})
	l := quant.Layout{Rows: 2, Cols: 8, GroupSize: 4, Precision: quant.INT8}
	w := make([]float32, 16)
	w[13] = float32(math.Inf(-1))
	w[6] = 3e38
	rec.words = [2]uint64{13, 1}
	err := b.GroupScales(make([]uint16, 4), w, l)
	var nf *quant.NonFiniteError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, 13, nf.Index)
	rec.words = [2]uint64{math.MaxUint64, 1}
	err = b.GroupScales(make([]uint16, 4), w, l)
	var ov *quant.ScaleOverflowError
	require.ErrorAs(t, err, &ov)
	require.Equal(t, quant.ScaleOverflowError{Row: 0, Group: 1, AbsMax: 3e38}, *ov)
	// A word out of range is a device fault, never an index into w.
	rec.words = [2]uint64{16, math.MaxUint64}
	require.ErrorContains(t, b.GroupScales(make([]uint16, 4), w, l), "beyond")
	rec.words = [2]uint64{math.MaxUint64, 4}
	require.ErrorContains(t, b.GroupScales(make([]uint16, 4), w, l), "beyond")
	// A failed launch is returned as is.
	rec.fail = errors.New("launch failed")
	rec.words = [2]uint64{math.MaxUint64, math.MaxUint64}
	require.ErrorIs(t, b.GroupScales(make([]uint16, 4), w, l), rec.fail)
}

// Columns beyond 2^31-1 would overflow the kernels' 32-bit column index.
func TestWideRowsRefused(t *testing.T) {
	b := New(newRecorder(), Options{})
	l := quant.Layout{Rows: 1, Cols: math.MaxInt32 + 1, GroupSize: 128, Precision: quant.INT8}
	err := b.check("quantize", l, nil, nil, nil)
	require.ErrorContains(t, err, "2^31-1")
}
