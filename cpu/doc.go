// Package cpu is the reference backend of mixq: a Go implementation of
// quant.Backend that every other backend (CUDA, future SIMD paths) is
// compared against, bit for bit, by the conformance suite in
// quant/quanttest.
//
// Each kernel computes exactly the arithmetic written down in
// docs/ARITHMETIC.md, by calling the scalar steps of package quant
// (ScaleBits, Reciprocal, Code, Decode, PackNibble, UnpackNibble, AbsBits,
// FoldLanes, WelfordStep, Stats.Merge), which the Go compiler inlines. Every
// binary32 product and sum is wrapped in an explicit float32 conversion, so
// that no multiply-add is ever fused. Work is split across goroutines only
// along boundaries where the arithmetic is independent (whole groups, whole
// output rows, whole channels), so the result never depends on the number of
// threads.
//
// The kernels, as the reference loops compute them:
//
//	GroupScales  for each group: amax = max AbsBits(x) (as uint32), scale = ScaleBits(amax, p).
//	             A NaN or ±Inf anywhere in w takes precedence over a scale
//	             overflow: the error is *quant.NonFiniteError naming the lowest
//	             flat index. Otherwise the first overflowing group in row-major
//	             order gives *quant.ScaleOverflowError, whose AbsMax is the
//	             group's absolute maximum (a positive value). The contents of
//	             scales are unspecified after an error.
//	Quantize     inv = Reciprocal(scale); q = Code(x, inv, qmax); INT8 stores
//	             byte(int8(q)), INT4 stores PackNibble(q) with the even column
//	             in the low nibble and writes 0 into the unused high nibble of
//	             an odd-length row.
//	Dequantize   w = Decode(q, ScaleValue(scale)).
//	MatMul       per output: 32 lanes, per-group sums in ascending column
//	             order, t_g = s_g·scale, lane g mod 32, FoldLanes.
//	ChannelStats per channel: WelfordStep over tokens in ascending order
//	             from mean = M2 = 0, then Stats.Merge of the batch.
//
// QuantizeGroups, an extra method outside quant.Backend, does GroupScales and
// Quantize in one pass over the weights with the same bits and errors.
//
// Speed comes from the shape of the loops, never from a different
// arithmetic: rows are resliced so that the compiler drops bounds checks,
// absolute maxima are taken on the integer bit patterns with four running
// maxima, and Quantize's fast paths store the low bits of Code's rounded
// sum directly and check once per group that Code's clamp would have been
// inert (re-encoding the group with Code itself when not). Large kernels
// are split into one contiguous chunk per thread; tensors under about 32K
// elements run on the calling goroutine.
//
// On amd64 with AVX2 and F16C, QuantizeGroups and Dequantize hand the whole
// groups whose size is a multiple of 8 to assembly kernels (simd_amd64.s):
// an integer maximum of the AbsBits patterns, ScaleBits and Reciprocal
// eight groups at a time, quant.Code and quant.Decode lane by lane, each
// step the same IEEE binary32 operation as the scalar code, with no fused
// multiply-add, so the bits do not change. Finding the first non-finite
// value, the ragged end of a row and every other case stay in Go.
// GroupScales and Quantize are plain Go everywhere: the reference the fused
// kernels are checked against. The purego build tag leaves the assembly
// out, and the tests run both paths where the kernels exist.
//
// Buffers are validated against the layout before any memory is touched; a
// mismatch (including a nil buffer) is returned as an error, never a panic.
// A Backend holds no mutable state and is safe for concurrent use.
package cpu
