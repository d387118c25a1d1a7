//go:build amd64 && !purego

package cpu

import xcpu "golang.org/x/sys/cpu"

// haveSIMD reports whether the kernels of simd_amd64.s can run: the CPU has
// AVX2 and F16C (binary16 conversions), and the OS saves the YMM registers
// (x/sys/cpu checks that too). FMA is not needed and never used.
var haveSIMD = xcpu.X86.HasAVX2 && xcpu.X86.HasF16C

// simdName names the vector kernels in messages.
const simdName = "avx2"

// The kernels, in simd_amd64.s. They read and write exactly the ranges
// their wrappers below slice out, which panic on a short buffer before
// any assembly runs.

//go:noescape
func absMaxAVX2(m *uint32, x *float32, ngroups, gs int)

//go:noescape
func scalesAVX2(bits *uint16, inv *float32, m *uint32, n int, qmax float32)

//go:noescape
func encode8AVX2(dst *byte, x *float32, inv *float32, ngroups, gs int)

//go:noescape
func encode4AVX2(dst *byte, x *float32, inv *float32, ngroups, gs int)

//go:noescape
func decode8AVX2(y *float32, p *byte, sv *float32, ngroups, gs int)

//go:noescape
func decode4AVX2(y *float32, p *byte, sv *float32, ngroups, gs int)

// absMaxGroups sets m[k] = absMaxBits(x[k*gs : (k+1)*gs]) for every k.
// gs is a positive multiple of simdStep.
func absMaxGroups(m []uint32, x []float32, gs int) {
	if len(m) == 0 {
		return
	}
	x = x[:len(m)*gs]
	absMaxAVX2(&m[0], &x[0], len(m), gs)
}

// scalesGroups sets bits[k], inv[k] = quant.ScaleBits(amax, ·),
// quant.Reciprocal(bits[k]) with the given qmax for every amax =
// math.Float32frombits(m[k]) that is finite; the three slices have the
// same length, a multiple of simdStep.
func scalesGroups(bits []uint16, inv []float32, m []uint32, qmax float32) {
	n := len(m)
	if n == 0 {
		return
	}
	if n%simdStep != 0 || len(bits) != n || len(inv) != n {
		panic("cpu: scalesGroups: bad lengths")
	}
	scalesAVX2(&bits[0], &inv[0], &m[0], n, qmax)
}

// encodeGroups8 is encode8 (with quant.Code's clamp always applied) of
// every group x[k*gs : (k+1)*gs] into dst[k*gs : (k+1)*gs] with inv[k].
func encodeGroups8(dst []byte, x []float32, inv []float32, gs int) {
	if len(inv) == 0 {
		return
	}
	n := len(inv) * gs
	x, dst = x[:n], dst[:n]
	encode8AVX2(&dst[0], &x[0], &inv[0], len(inv), gs)
}

// encodeGroups4 is encode4 of every group x[k*gs : (k+1)*gs] into
// dst[k*gs/2 : (k+1)*gs/2] with inv[k]; gs is even, so groups start on a byte.
func encodeGroups4(dst []byte, x []float32, inv []float32, gs int) {
	if len(inv) == 0 {
		return
	}
	n := len(inv) * gs
	x, dst = x[:n], dst[:n/2]
	encode4AVX2(&dst[0], &x[0], &inv[0], len(inv), gs)
}

// decodeGroups8 is decode8 of every group: y[k*gs : (k+1)*gs] from
// p[k*gs : (k+1)*gs] with the scale value sv[k].
func decodeGroups8(y []float32, p []byte, sv []float32, gs int) {
	if len(sv) == 0 {
		return
	}
	n := len(sv) * gs
	y, p = y[:n], p[:n]
	decode8AVX2(&y[0], &p[0], &sv[0], len(sv), gs)
}

// decodeGroups4 is decode4 of every group: y[k*gs : (k+1)*gs] from
// p[k*gs/2 : (k+1)*gs/2] with the scale value sv[k]; gs is even.
func decodeGroups4(y []float32, p []byte, sv []float32, gs int) {
	if len(sv) == 0 {
		return
	}
	n := len(sv) * gs
	y, p = y[:n], p[:n/2]
	decode4AVX2(&y[0], &p[0], &sv[0], len(sv), gs)
}
