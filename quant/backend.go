package quant

// Backend runs the four kernel families of mixq. Every implementation must
// produce bit-identical results to the reference in package cpu, following the
// arithmetic in this package's documentation; quanttest checks that.
//
// Buffers are host slices owned by the caller. Implementations validate
// lengths against the Layout before touching memory and return an error,
// never panic, on a mismatch.
type Backend interface {
	// Name identifies the backend in messages and benchmarks ("cpu", "cuda:0").
	Name() string

	// GroupScales computes the binary16 scale of every group of w (row-major
	// [Rows][GroupsPerRow]). It returns *NonFiniteError for the lowest index
	// holding NaN or ±Inf (this wins over any overflow), else
	// *ScaleOverflowError for the first group in row-major order whose scale
	// exceeds F16, with its positive absolute maximum.
	GroupScales(scales []uint16, w []float32, l Layout) error

	// Quantize encodes w with the given scales into packed codes: one int8
	// per element for INT8, two nibbles per byte for INT4 (even column in the
	// low nibble). w must be finite (GroupScales checks it).
	Quantize(packed []byte, w []float32, scales []uint16, l Layout) error

	// Dequantize expands packed codes back to binary32: w = float32(q)·s.
	Dequantize(w []float32, packed []byte, scales []uint16, l Layout) error

	// MatMul computes y = x·Wᵀ for x of shape [m, l.Cols] and the quantized
	// W of shape [l.Rows, l.Cols], giving y of shape [m, l.Rows], in the
	// canonical summation order of the documentation.
	MatMul(y, x []float32, m int, packed []byte, scales []uint16, l Layout) error

	// Backends may also implement FusedQuantizer.

	// ChannelStats reduces x, a row-major [tokens, s.Channels()] batch of
	// activations, to per-channel Welford statistics in ascending token
	// order, and merges them into s with Stats.Merge.
	ChannelStats(s *Stats, x []float32, tokens int) error
}

// FusedQuantizer is implemented by backends that compute the scales and the
// codes in one pass over the weights. The results and errors are exactly
// those of GroupScales followed by Quantize; callers use it when available
// because it reads the input once.
type FusedQuantizer interface {
	QuantizeGroups(packed []byte, scales []uint16, w []float32, l Layout) error
}

// QuantizeGroups computes scales and codes with be, in one pass when be
// implements FusedQuantizer, otherwise as GroupScales then Quantize.
func QuantizeGroups(be Backend, packed []byte, scales []uint16, w []float32, l Layout) error {
	if f, ok := be.(FusedQuantizer); ok {
		return f.QuantizeGroups(packed, scales, w, l)
	}
	if err := be.GroupScales(scales, w, l); err != nil {
		return err
	}
	return be.Quantize(packed, w, scales, l)
}
