package gpu

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/mixq/mixq/kernels"
	"github.com/mixq/mixq/quant"
)

// Launch geometry. Blocks of 256 threads (8 warps) suit every kernel: the
// warp-per-group and warp-per-row kernels get 8 items per block, and the
// elementwise ones a full warp of bytes per 32 threads. Grids are capped and
// the kernels walk the rest with grid-stride loops.
const (
	blockThreads  = 256
	warpsPerBlock = blockThreads / 32
	maxGridX      = 1 << 16
	maxGridY      = 65535 // the hardware limit of gridDim.y
	gemvMaxM      = 8     // mixq_gemv keeps up to 8 rows of x in registers
	gemmTileM     = 16    // mixq_gemm's rows of x per blockIdx.y
)

// DefaultChunkBytes is the input size of one pipeline chunk: large enough
// that a launch and a copy cost far more than their fixed overheads (4 MiB
// take about 100 µs over PCIe), small enough that the 16 MiB blocks mixq
// quantize hands the backend are cut into four, which the two streams
// overlap.
const DefaultChunkBytes = 4 << 20

// Options tune a Backend.
type Options struct {
	// ChunkBytes is the binary32 input per pipeline chunk (DefaultChunkBytes
	// when 0). Tests set it small to exercise the chunking.
	ChunkBytes int
	// ExactBuffers sizes every device buffer to the call that uses it
	// instead of keeping larger ones with headroom: slower, but a kernel
	// writing past its output then hits memory it does not own, which the
	// emulator's guards detect.
	ExactBuffers bool
}

// Backend runs the mixq kernels on a Device. It is safe for concurrent use:
// calls are serialised, as the device is one queue of work anyway.
type Backend struct {
	dev   Device
	chunk int
	exact bool

	mu      sync.Mutex
	scratch map[string]*buffer
}

type buffer struct {
	p Ptr
	n int
}

var (
	_ quant.Backend        = (*Backend)(nil)
	_ quant.FusedQuantizer = (*Backend)(nil)
)

// New returns a backend on dev. The backend owns dev: Close closes it.
func New(dev Device, o Options) *Backend {
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	return &Backend{dev: dev, chunk: o.ChunkBytes, exact: o.ExactBuffers, scratch: map[string]*buffer{}}
}

// Name is the device's name, e.g. "cuda:0".
func (b *Backend) Name() string { return b.dev.Name() }

// Device returns the device, for benchmarks that time kernels on
// device-resident data.
func (b *Backend) Device() Device { return b.dev }

// Close frees the device buffers and closes the device.
func (b *Backend) Close() error {
	err := b.FreeBuffers()
	return errors.Join(err, b.dev.Close())
}

// FreeBuffers frees the device buffers kept between calls, leaving the
// device open.
func (b *Backend) FreeBuffers() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for k, buf := range b.scratch {
		errs = append(errs, b.dev.Free(buf.p))
		delete(b.scratch, k)
	}
	return errors.Join(errs...)
}

// buf returns the scratch buffer of a role with at least n bytes, growing
// it (with headroom, so that slowly growing tensors do not reallocate each
// time) when needed.
func (b *Backend) buf(role string, n int) (Ptr, error) {
	n = max(n, 1)
	if s, ok := b.scratch[role]; ok {
		if s.n == n || s.n > n && !b.exact {
			return s.p, nil
		}
		delete(b.scratch, role)
		if err := b.dev.Free(s.p); err != nil {
			return 0, err
		}
	}
	if !b.exact {
		n += n / 4
	}
	p, err := b.dev.Alloc(n)
	if err != nil {
		return 0, fmt.Errorf("%s: allocating %d bytes for %s: %w", b.dev.Name(), n, role, err)
	}
	b.scratch[role] = &buffer{p: p, n: n}
	return p, nil
}

// need is a scratch buffer a call needs: its role and size in bytes.
type need struct {
	role string
	n    int
}

// bufs returns the scratch buffers of several roles.
func (b *Backend) bufs(needs ...need) ([]Ptr, error) {
	ps := make([]Ptr, len(needs))
	for i, nd := range needs {
		p, err := b.buf(nd.role, nd.n)
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// upload queues host-to-device copies on stream 0, host slices in the same
// order as dst.
func (b *Backend) upload(dst []Ptr, src ...[]byte) error {
	for i, h := range src {
		if err := b.dev.Upload(dst[i], h, 0); err != nil {
			return err
		}
	}
	return nil
}

// BytesOf views a slice's memory as bytes, for copies to and from a
// Device. The bytes alias the slice.
func BytesOf[E any](s []E) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (b *Backend) check(op string, l quant.Layout, w []float32, packed []byte, scales []uint16) error {
	if err := l.CheckBuffers(w, packed, scales); err != nil {
		return fmt.Errorf("%s: %s: %w", b.dev.Name(), op, err)
	}
	// Column indices are 32-bit inside the elementwise kernels.
	if l.Cols > math.MaxInt32 {
		return fmt.Errorf("%s: %s: %d columns exceed the kernels' 2^31-1", b.dev.Name(), op, l.Cols)
	}
	return nil
}

func blocksFor(items, perBlock, limit int) int {
	return max(1, min((items+perBlock-1)/perBlock, limit))
}

func bitsOf(l quant.Layout) uint64 {
	if l.Precision == quant.INT4 {
		return 4
	}
	return 8
}

func u64(v int) uint64 { return uint64(v) }

// GroupScales computes the binary16 scale of every group.
func (b *Backend) GroupScales(scales []uint16, w []float32, l quant.Layout) error {
	if err := b.check("groupscales", l, nonNil(w), nil, nonNil(scales)); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pipeline(nil, scales, w, l, false)
}

// QuantizeGroups computes scales and codes in one pass over the weights:
// the fused kernel when every packed byte lies in one group (INT8, or INT4
// with an even group size), otherwise the scale kernel then the byte
// kernel.
func (b *Backend) QuantizeGroups(packed []byte, scales []uint16, w []float32, l quant.Layout) error {
	if err := b.check("quantizegroups", l, nonNil(w), nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if l.Precision == quant.INT4 && l.GroupSize%2 != 0 {
		if err := b.pipeline(nil, scales, w, l, false); err != nil {
			return err
		}
		return b.quantize(packed, w, scales, l)
	}
	return b.pipeline(packed, scales, w, l, true)
}

// pipeline runs the scale kernel (fused = false) or the fused quantizer on
// chunks of rows, alternating two streams so that copies overlap kernels,
// then turns the error words into errors.
func (b *Backend) pipeline(packed []byte, scales []uint16, w []float32, l quant.Layout, fused bool) error {
	errs, err := b.buf("errs", 16)
	if err != nil {
		return err
	}
	if err := b.dev.Fill(errs, 0xff, 16, 0); err != nil {
		return err
	}
	if err := b.dev.Sync(0); err != nil { // both streams see the cleared words
		return err
	}
	ng, rb, cols := l.GroupsPerRow(), l.RowBytes(), l.Cols
	rowsPer := max(1, b.chunk/(4*cols))
	// Chunk i is queued (upload, kernel) on stream i%2 before the results
	// of chunk i-1 are fetched: downloads into pageable memory block the
	// host, and this order keeps the other stream's upload and kernel in
	// flight meanwhile. A stream's buffers are reused two chunks later,
	// after their downloads, which are in order on that stream.
	type chunk struct {
		r0, r1 int
		s      Stream
		dp, ds Ptr
	}
	fetch := func(c chunk) error {
		if fused {
			if err := b.dev.Download(packed[c.r0*rb:c.r1*rb], c.dp, c.s); err != nil {
				return err
			}
		}
		return b.dev.Download(BytesOf(scales[c.r0*ng:c.r1*ng]), c.ds, c.s)
	}
	var prev *chunk
	for i, r0 := 0, 0; r0 < l.Rows; i, r0 = i+1, r0+rowsPer {
		c := chunk{r0: r0, r1: min(r0+rowsPer, l.Rows), s: Stream(i % Streams)}
		n := c.r1 - c.r0
		tag := fmt.Sprint(int(c.s))
		dw, err := b.buf("w"+tag, 4*n*cols)
		if err != nil {
			return err
		}
		if c.ds, err = b.buf("scales"+tag, 2*n*ng); err != nil {
			return err
		}
		if err := b.dev.Upload(dw, BytesOf(w[c.r0*cols:c.r1*cols]), c.s); err != nil {
			return err
		}
		if fused {
			if c.dp, err = b.buf("packed"+tag, n*rb); err != nil {
				return err
			}
			sub := l
			sub.Rows = n
			if err := LaunchQuantizeGroups(b.dev, c.s, dw, c.dp, c.ds, errs, sub, c.r0); err != nil {
				return err
			}
		} else {
			grid := Dim3{blocksFor(n*ng, warpsPerBlock, maxGridX), 1, 1}
			err = b.dev.Launch(kernels.GroupScales, grid, blockThreads, c.s,
				uint64(dw), u64(n), u64(cols), u64(l.GroupSize), u64(l.Precision.QMax()), u64(c.r0), uint64(c.ds), uint64(errs))
			if err != nil {
				return err
			}
		}
		if prev != nil {
			if err := fetch(*prev); err != nil {
				return err
			}
		}
		prev = &c
	}
	if prev != nil {
		if err := fetch(*prev); err != nil {
			return err
		}
	}
	for s := range Stream(Streams) {
		if err := b.dev.Sync(s); err != nil {
			return err
		}
	}
	var words [2]uint64
	if err := b.dev.Download(BytesOf(words[:]), errs, 0); err != nil {
		return err
	}
	if err := b.dev.Sync(0); err != nil {
		return err
	}
	return errorFromWords(words, w, l)
}

// errorFromWords turns the kernels' error words into the reference's errors:
// the lowest non-finite index wins; else the first overflowing group, with
// its absolute maximum recomputed on the host (a read of one group).
func errorFromWords(words [2]uint64, w []float32, l quant.Layout) error {
	const none = math.MaxUint64
	if i := words[0]; i != none {
		if i >= uint64(len(w)) {
			return fmt.Errorf("kernel reported non-finite index %d beyond %d elements", i, len(w))
		}
		return &quant.NonFiniteError{Index: int(i), Value: w[i]}
	}
	if fg := words[1]; fg != none {
		if fg >= uint64(l.NumScales()) {
			return fmt.Errorf("kernel reported overflow in group %d beyond %d groups", fg, l.NumScales())
		}
		ng := l.GroupsPerRow()
		row, g := int(fg)/ng, int(fg)%ng
		lo, hi := l.Group(g)
		var m uint32
		for _, x := range w[row*l.Cols+lo : row*l.Cols+hi] {
			m = max(m, math.Float32bits(x)&0x7fffffff)
		}
		return &quant.ScaleOverflowError{Row: row, Group: g, AbsMax: math.Float32frombits(m)}
	}
	return nil
}

// Quantize encodes w with the given scales.
func (b *Backend) Quantize(packed []byte, w []float32, scales []uint16, l quant.Layout) error {
	if err := b.check("quantize", l, nonNil(w), nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.quantize(packed, w, scales, l)
}

func (b *Backend) quantize(packed []byte, w []float32, scales []uint16, l quant.Layout) error {
	d, err := b.bufs(need{"w0", 4 * len(w)}, need{"scales0", 2 * len(scales)}, need{"packed0", len(packed)})
	if err != nil {
		return err
	}
	if err := b.upload(d, BytesOf(w), BytesOf(scales)); err != nil {
		return err
	}
	grid := Dim3{blocksFor(l.RowBytes(), blockThreads, math.MaxInt32), min(l.Rows, maxGridY), 1}
	err = b.dev.Launch(kernels.Quantize, grid, blockThreads, 0,
		uint64(d[0]), uint64(d[1]), u64(l.Rows), u64(l.Cols), u64(l.GroupSize), bitsOf(l), uint64(d[2]))
	if err != nil {
		return err
	}
	if err := b.dev.Download(packed, d[2], 0); err != nil {
		return err
	}
	return b.dev.Sync(0)
}

// Dequantize expands packed codes to binary32.
func (b *Backend) Dequantize(w []float32, packed []byte, scales []uint16, l quant.Layout) error {
	if err := b.check("dequantize", l, nonNil(w), nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d, err := b.bufs(need{"packed0", len(packed)}, need{"scales0", 2 * len(scales)}, need{"w0", 4 * len(w)})
	if err != nil {
		return err
	}
	if err := b.upload(d, packed, BytesOf(scales)); err != nil {
		return err
	}
	if err := LaunchDequantize(b.dev, 0, d[0], d[1], d[2], l); err != nil {
		return err
	}
	if err := b.dev.Download(BytesOf(w), d[2], 0); err != nil {
		return err
	}
	return b.dev.Sync(0)
}

// MatMulPlan is the launch of one dequantizing matmul: which kernel, its
// grid, and whether the vector loads apply.
type MatMulPlan struct {
	Kernel string
	Grid   Dim3
	Block  int
	Vec    bool
}

// PlanMatMul chooses the kernel for y = x·Wᵀ with m rows of x: up to 8
// rows, the GEMV with x staged in shared memory when 32 padded groups of
// each row fit, else the GEMV reading x through L1; beyond 8 rows the tiled
// GEMM. Vector loads need K and the group size to be multiples of 8 (INT4)
// or 4 (INT8), so that every 32-bit code load and 16-byte x load is
// aligned; the staged GEMV needs them too.
func PlanMatMul(m int, l quant.Layout) MatMulPlan {
	step := 4
	if l.Precision == quant.INT4 {
		step = 8
	}
	p := MatMulPlan{Block: blockThreads, Vec: l.Cols%step == 0 && l.GroupSize%step == 0}
	p.Grid = Dim3{blocksFor(l.Rows, warpsPerBlock, maxGridX), 1, 1}
	switch {
	case m <= gemvMaxM && p.Vec && m*32*kernels.StagedStride(l.GroupSize) <= kernels.StagedFloats:
		p.Kernel = kernels.GEMVStaged
	case m <= gemvMaxM:
		p.Kernel = kernels.GEMV
	default:
		p.Kernel = kernels.GEMM
		p.Grid.Y = (m + gemmTileM - 1) / gemmTileM
	}
	return p
}

// Args are the kernel arguments of a planned matmul on device buffers.
func (p MatMulPlan) Args(x Ptr, m int, packed, scales Ptr, l quant.Layout, y Ptr) []uint64 {
	vec := uint64(0)
	if p.Vec {
		vec = 1
	}
	return []uint64{uint64(x), u64(m), uint64(packed), uint64(scales), u64(l.Rows), u64(l.Cols),
		u64(l.GroupSize), bitsOf(l), vec, uint64(y)}
}

// MatMul computes y = x·Wᵀ.
func (b *Backend) MatMul(y, x []float32, m int, packed []byte, scales []uint16, l quant.Layout) error {
	if err := b.check("matmul", l, nil, nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	if err := l.CheckMatMul(y, x, m); err != nil {
		return fmt.Errorf("%s: %w", b.dev.Name(), err)
	}
	if m > maxGridY*gemmTileM { // gridDim.y holds the tiles of x
		return fmt.Errorf("%s: matmul: m = %d exceeds %d", b.dev.Name(), m, maxGridY*gemmTileM)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d, err := b.bufs(need{"x", 4 * len(x)}, need{"packed0", len(packed)}, need{"scales0", 2 * len(scales)}, need{"y", 4 * len(y)})
	if err != nil {
		return err
	}
	if err := b.upload(d, BytesOf(x), packed, BytesOf(scales)); err != nil {
		return err
	}
	dy := d[3]
	if err := LaunchMatMul(b.dev, 0, d[0], m, d[1], d[2], l, dy); err != nil {
		return err
	}
	if err := b.dev.Download(BytesOf(y), dy, 0); err != nil {
		return err
	}
	return b.dev.Sync(0)
}

// ChannelStats reduces a batch to per-channel Welford statistics on the
// device and merges them into s on the host with quant.Stats.Merge, the
// written merge.
func (b *Backend) ChannelStats(s *quant.Stats, x []float32, tokens int) error {
	if err := quant.CheckBatch(s, x, tokens); err != nil {
		return fmt.Errorf("%s: %w", b.dev.Name(), err)
	}
	ch := s.Channels()
	switch {
	case tokens == 0:
		return nil // an empty batch merges as a no-op
	case ch == 0:
		return s.Merge(&quant.Stats{Count: int64(tokens)}) // only the count moves
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d, err := b.bufs(need{"x", 4 * len(x)}, need{"mean", 8 * ch}, need{"m2", 8 * ch})
	if err != nil {
		return err
	}
	if err := b.upload(d, BytesOf(x)); err != nil {
		return err
	}
	dm, d2 := d[1], d[2]
	grid := Dim3{blocksFor(ch, blockThreads, maxGridX), 1, 1}
	if err := b.dev.Launch(kernels.ChannelWelford, grid, blockThreads, 0,
		uint64(d[0]), u64(tokens), u64(ch), uint64(dm), uint64(d2)); err != nil {
		return err
	}
	batch := quant.Stats{Count: int64(tokens), Mean: make([]float64, ch), M2: make([]float64, ch)}
	if err := b.dev.Download(BytesOf(batch.Mean), dm, 0); err != nil {
		return err
	}
	if err := b.dev.Download(BytesOf(batch.M2), d2, 0); err != nil {
		return err
	}
	if err := b.dev.Sync(0); err != nil {
		return err
	}
	return s.Merge(&batch)
}

// The launches on device-resident buffers, shared by the Backend methods
// and the benchmarks, which time kernels without the copies.

// LaunchQuantizeGroups queues the fused scale-and-quantize kernel on w
// (l.Rows rows starting at tensor row row0, which only offsets the
// positions written to the error words errs). It needs every packed byte in
// one group: INT8, or INT4 with an even group size.
func LaunchQuantizeGroups(dev Device, s Stream, w, packed, scales, errs Ptr, l quant.Layout, row0 int) error {
	if l.Precision == quant.INT4 && l.GroupSize%2 != 0 {
		return fmt.Errorf("%s: the fused quantizer needs an even INT4 group size, not %d", dev.Name(), l.GroupSize)
	}
	grid := Dim3{blocksFor(l.NumScales(), warpsPerBlock, maxGridX), 1, 1}
	return dev.Launch(kernels.QuantizeGroups, grid, blockThreads, s,
		uint64(w), u64(l.Rows), u64(l.Cols), u64(l.GroupSize), bitsOf(l), u64(row0), uint64(packed), uint64(scales), uint64(errs))
}

// LaunchDequantize queues the dequantize kernel.
func LaunchDequantize(dev Device, s Stream, packed, scales, w Ptr, l quant.Layout) error {
	grid := Dim3{blocksFor(l.RowBytes(), blockThreads, math.MaxInt32), min(l.Rows, maxGridY), 1}
	return dev.Launch(kernels.Dequantize, grid, blockThreads, s,
		uint64(packed), uint64(scales), u64(l.Rows), u64(l.Cols), u64(l.GroupSize), bitsOf(l), uint64(w))
}

// LaunchMatMul queues y = x·Wᵀ for m rows of x, on the path PlanMatMul picks.
func LaunchMatMul(dev Device, s Stream, x Ptr, m int, packed, scales Ptr, l quant.Layout, y Ptr) error {
	return PlanMatMul(m, l).Launch(dev, s, x, m, packed, scales, l, y)
}

// Launch queues the planned matmul; benchmarks change Kernel to compare
// the GEMV variants, which take the same arguments.
func (p MatMulPlan) Launch(dev Device, s Stream, x Ptr, m int, packed, scales Ptr, l quant.Layout, y Ptr) error {
	return dev.Launch(p.Kernel, p.Grid, p.Block, s, p.Args(x, m, packed, scales, l, y)...)
}
