package quant

import (
	"math"

	"github.com/x448/float16"
)

// The scalar steps of the arithmetic, written once. Backends call these (the
// CPU inlines them) and device kernels transcribe them operation for
// operation; doc.go gives the contract in prose.

// f16Min is the smallest positive binary16 value, 2^-24 (a subnormal).
const f16Min uint16 = 0x0001

// f16Inf is the bit pattern of +Inf in binary16.
const f16Inf uint16 = 0x7c00

// ScaleBits turns a group's absolute maximum into the stored binary16 scale.
//
//	s32 = amax / qmax          (binary32 division, round to nearest even)
//	s16 = binary16(s32)        (round to nearest even, subnormals kept)
//	if amax > 0 and s16 == 0:  s16 = 2^-24
//
// ok is false when s16 overflows to +Inf, which callers report as an error.
func ScaleBits(amax float32, p Precision) (bits uint16, ok bool) {
	s32 := amax / float32(p.QMax())
	bits = uint16(float16.Fromfloat32(s32))
	if bits == f16Inf {
		return bits, false
	}
	if bits == 0 && amax > 0 {
		bits = f16Min
	}
	return bits, true
}

// ScaleValue widens a stored scale to binary32 (exact).
func ScaleValue(bits uint16) float32 { return float16.Frombits(bits).Float32() }

// Reciprocal is the multiplier used to quantize: 1/s in binary32, rounded to
// nearest even, or 0 for a zero scale (an all-zero group).
func Reciprocal(bits uint16) float32 {
	if bits == 0 {
		return 0
	}
	return 1 / ScaleValue(bits)
}

// roundMagic is 1.5 × 2^23. Adding it to a binary32 v with |v| < 2^22 leaves
// round-to-nearest-even(v) in the low mantissa bits, because the sum's ulp is 1.
const roundMagic = float32(12582912)

// Code quantizes one finite value with the reciprocal of its group's scale:
//
//	v = x * inv                       (binary32 multiply, round to nearest even)
//	q = clamp(rint(v), -qmax, qmax)   rint rounds half to even; the clamp saturates
//
// Clamping v to [-qmax, qmax] before rounding gives the same q, because qmax
// is an integer and rint is monotone, and it keeps the magic-number rounding
// below exact (it needs |v| < 2^22) for any scale a caller passes, not only
// for the scales GroupScales produces (those give |v| ≤ 1.5·qmax).
func Code(x, inv float32, qmax int32) int32 {
	m := float32(qmax)
	v := max(-m, min(m, float32(x*inv)))
	return int32(math.Float32bits(float32(v+roundMagic))) - int32(math.Float32bits(roundMagic))
}

// Decode is the dequantized value of a code: float32(q) × s, exact because
// |q| needs at most 7 significant bits and s at most 11.
func Decode(q int32, scale float32) float32 { return float32(float32(q) * scale) }

// PackNibble encodes a code in [-7, 7] as a 4-bit two's complement nibble.
func PackNibble(q int32) byte { return byte(q) & 0x0f }

// UnpackNibble sign-extends a 4-bit two's complement nibble.
func UnpackNibble(n byte) int32 { return int32(int8(n<<4) >> 4) }

// UnpackRow expands the first len(dst) codes of one packed row of
// precision p (INT8 or INT4): a byte each for INT8; for INT4 column c in
// the low nibble of byte c/2 when c is even, the high nibble when odd.
func UnpackRow(dst []int8, row []byte, p Precision) {
	if p == INT8 {
		for i := range dst {
			dst[i] = int8(row[i])
		}
		return
	}
	for i := range dst {
		dst[i] = int8(UnpackNibble(row[i/2] >> (4 * (i % 2))))
	}
}

// IsFinite reports whether a binary32 value is neither NaN nor ±Inf, by its
// exponent bits, which is what device kernels test too.
func IsFinite(x float32) bool { return math.Float32bits(x)&0x7f800000 != 0x7f800000 }

// AbsBits clears the sign bit, so |-0| is +0 and the comparison of absolute
// values can be done on the integer bit patterns of finite values.
func AbsBits(x float32) uint32 { return math.Float32bits(x) & 0x7fffffff }

// MatMulLanes is the number of partial accumulators of one output of MatMul.
// Group g of a row is added to lane g mod MatMulLanes, and the lanes are
// folded by halving (lane l += lane l+16, then +8, +4, +2, +1): the order of a
// warp's xor-shuffle reduction, written down so the CPU can follow it.
const MatMulLanes = 32

// FoldLanes reduces the lane accumulators in the canonical order and returns lane 0.
func FoldLanes(acc *[MatMulLanes]float32) float32 {
	for off := MatMulLanes / 2; off > 0; off /= 2 {
		for l := 0; l < off; l++ {
			acc[l] = float32(acc[l] + acc[l+off])
		}
	}
	return acc[0]
}
