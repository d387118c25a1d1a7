package cpu

import (
	"math"

	"github.com/mixq/mixq/quant"
)

// QuantizeGroups and Dequantize hand the whole groups whose size is a
// multiple of simdStep to vector kernels (simd_amd64.s: AVX2 and F16C) when
// the CPU has them, keeping the same bits. For QuantizeGroups:
//
//   - the absolute maximum is an integer maximum of the same AbsBits
//     patterns as absMaxBits: exact, and in any order;
//   - the scale and its reciprocal are quant.ScaleBits and
//     quant.Reciprocal done with the same IEEE operations, eight groups
//     at a time;
//   - the codes are quant.Code lane by lane: one multiply, the clamp, one
//     add of roundMagic, each an IEEE binary32 operation rounded to
//     nearest even, never fused into a multiply-add.
//
// Non-finite values are only detected by the kernels (an absolute maximum
// at or above nonFiniteBits); finding the first one, the error order, the
// ragged last group of a row, other group sizes and odd INT4 groups stay
// in plain Go. Dequantize widens the codes exactly and multiplies them by
// quant.ScaleValue with the multiply of quant.Decode. GroupScales and
// Quantize never use the kernels: they are the reference QuantizeGroups is
// tested against. With the purego build tag, on other architectures or
// without AVX2 and F16C, haveSIMD is false and only Go runs.

// simdStep is the number of floats the kernels take at a time.
const simdStep = 8

// simdBatch is the number of floats whose groups are reduced, then
// encoded, in one round: 8 KiB, which stays in the L1 cache between the
// kernel that reads it from memory and the kernel that encodes it.
const simdBatch = 2048

// f16Inf is the scale bits of quant.ScaleBits that mean overflow.
const f16Inf = 0x7c00

// quantizeGroupsSIMD is the loop of quantizeGroups over the whole groups
// [g0, g1) of one row, x (with codes d and scales s), for a group size
// that is a multiple of simdStep and not an odd INT4 group. It reports
// true when it found a non-finite value (recorded in r), after which the
// caller stops.
func quantizeGroupsSIMD(d []byte, s []uint16, x []float32, l quant.Layout, row, g0, g1 int, r *scaleResult) (stop bool) {
	gs, gpr, p := l.GroupSize, l.GroupsPerRow(), l.Precision
	qmax := float32(p.QMax())
	nb := max(simdBatch/gs, 1)
	var (
		amax [simdBatch / simdStep]uint32
		bits [simdBatch / simdStep]uint16
		inv  [simdBatch / simdStep]float32
	)
	for g := g0; g < g1; g += nb {
		n := min(nb, g1-g)
		a := g * gs
		grp := x[a : a+n*gs]
		absMaxGroups(amax[:n], grp, gs)
		// The scales of whole vectors of groups: the entries past n are
		// stale or zero, and unused.
		n8 := (n + simdStep - 1) / simdStep * simdStep
		scalesGroups(bits[:n8], inv[:n8], amax[:n8], qmax)
		// The groups in order, as in groupScales: the first non-finite
		// group holds the lowest non-finite index of the batch.
		for k, m := range amax[:n] {
			if m >= nonFiniteBits {
				gk := grp[k*gs : (k+1)*gs]
				i := firstNonFinite(gk)
				r.nonFinite, r.value = row*l.Cols+a+k*gs+i, gk[i]
				return true
			}
			if bits[k] == f16Inf && r.overflow < 0 {
				r.overflow, r.amax = row*gpr+g+k, math.Float32frombits(m)
			}
		}
		copy(s[g:g+n], bits[:n])
		if r.overflow >= 0 {
			continue // an error already: only the search for non-finite values goes on
		}
		if p == quant.INT4 {
			encodeGroups4(d[a/2:], grp, inv[:n], gs)
		} else {
			encodeGroups8(d[a:], grp, inv[:n], gs)
		}
	}
	return false
}

// dequantizeSIMD is the loop of dequantize over the whole groups [g0, g1)
// of one row, y (with codes p and scales s), for a group size that is a
// multiple of simdStep: the scale values are quant.ScaleValue here, the
// codes are widened and multiplied in the kernels.
func dequantizeSIMD(y []float32, p []byte, s []uint16, gs int, int4 bool, g0, g1 int) {
	nb := max(simdBatch/gs, 1)
	var sv [simdBatch / simdStep]float32
	for g := g0; g < g1; g += nb {
		n := min(nb, g1-g)
		for k := range n {
			sv[k] = quant.ScaleValue(s[g+k])
		}
		a := g * gs
		if int4 {
			decodeGroups4(y[a:], p[a/2:], sv[:n], gs)
		} else {
			decodeGroups8(y[a:], p[a:], sv[:n], gs)
		}
	}
}
