package cpu

import (
	"math"
	"unsafe"

	"github.com/mixq/mixq/quant"
)

const (
	qmax8 = 127 // quant.INT8.QMax()
	qmax4 = 7   // quant.INT4.QMax()
)

// Quantize encodes w with the given scales into packed codes:
//
//	for each element x in group g of row r:
//	    q = quant.Code(x, quant.Reciprocal(scales[r][g]), qmax)
//	    INT8: packed[r][c] = byte(int8(q))
//	    INT4: byte c/2 of row r holds quant.PackNibble(q) in its low nibble
//	          for an even c, its high nibble for an odd c; 0 in the unused
//	          high nibble of an odd-length row
//
// The scales need not come from GroupScales, but Code's rounding is only
// defined for |x·inv| < 2^22, which such scales guarantee.
func (b *Backend) Quantize(packed []byte, w []float32, scales []uint16, l quant.Layout) error {
	if err := checkLayout("quantize", l, nonNil(w), nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	units, align := l.NumScales(), 1
	if l.Precision == quant.INT4 && l.GroupSize%2 != 0 {
		// Groups of odd size share bytes with their neighbours: split on rows.
		align = l.GroupsPerRow()
	}
	parallel(units, align, b.chunks(units/align, l.Elements()), func(_, lo, hi int) {
		quantize(packed, w, scales, l, lo, hi)
	})
	return nil
}

// quantize encodes the flat groups [lo, hi).
func quantize(packed []byte, w []float32, scales []uint16, l quant.Layout, lo, hi int) {
	gpr, gs, cols, rb := l.GroupsPerRow(), l.GroupSize, l.Cols, l.RowBytes()
	int4 := l.Precision == quant.INT4
	for f := lo; f < hi; {
		row := f / gpr
		g0 := f - row*gpr
		g1 := min(gpr, g0+hi-f)
		x := w[row*cols : row*cols+cols]
		s := scales[row*gpr : row*gpr+gpr]
		p := packed[row*rb : row*rb+rb]
		switch {
		case !int4:
			for g := g0; g < g1; g++ {
				a := g * gs
				e := min(a+gs, cols)
				encode8(p[a:e], x[a:e], quant.Reciprocal(s[g]))
			}
		case gs%2 == 0:
			// Every group starts on an even column, hence on a byte.
			for g := g0; g < g1; g++ {
				a := g * gs
				e := min(a+gs, cols)
				encode4(p[a/2:(e+1)/2], x[a:e], quant.Reciprocal(s[g]))
			}
		default:
			encode4Odd(p, x, s, gs) // a whole row (g0 == 0, g1 == gpr)
		}
		f += g1 - g0
	}
}

// The fast paths below compute exactly quant.Code without its clamp and
// make sure the clamp would have changed nothing; where it would have, the
// group is encoded with quant.Code itself.
//
// Code rounds v = x·inv by adding roundMagic = 1.5·2^23 and subtracting the
// bits of roundMagic, magicBits = 0x4b400000, from the bits u of the sum:
// q = u − magicBits. The low byte of magicBits is zero, so the low byte (or
// nibble) of q, which is what INT8 (INT4) stores, is the low byte (or
// nibble) of u. The clamp to [−qmax, qmax] is inert exactly when
// u − (magicBits − qmax), as an unsigned number, is at most 2·qmax.
//
// Quantize tracks the largest such value over the group (one compare and one
// conditional move per element, where the clamp costs two of each).
// QuantizeGroups knows the group's absolute maximum amax and needs a single
// test per group: if Code's rounding of vmax = f32(amax·inv) is at most qmax,
// the clamp is inert for the whole group, because |f32(x·inv)| =
// f32(|x|·inv) ≤ vmax (rounding is monotone and odd) and rint is monotone.
const (
	roundMagic = float32(12582912) // 1.5·2^23, as in quant.Code
	magicBits  = 0x4b400000        // math.Float32bits(roundMagic)
)

// rounded is the bit pattern of f32(f32(x·inv) + roundMagic), the first half of quant.Code.
func rounded(x, inv float32) uint32 { return math.Float32bits(float32(float32(x*inv) + roundMagic)) }

// clampFree reports whether quant.Code's clamp is inert for every x with
// |x| ≤ amax, amax and inv being non-negative (see above).
func clampFree(amax, inv float32, qmax uint32) bool {
	return rounded(amax, inv)-(magicBits-qmax) <= 2*qmax
}

// encode8 stores byte(int8(quant.Code(x[i], inv, 127))) into dst[i].
func encode8(dst []byte, x []float32, inv float32) {
	dst = dst[:len(x)]
	var worst uint32
	for i, v := range x {
		u := rounded(v, inv)
		dst[i] = byte(u)
		worst = max(worst, u-(magicBits-qmax8))
	}
	if worst > 2*qmax8 {
		encode8Code(dst, x, inv)
	}
}

// encode8Raw is encode8 for a group known to be clamp-free.
func encode8Raw(dst []byte, x []float32, inv float32) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = byte(rounded(v, inv))
	}
}

// encode8Code is encode8 written with quant.Code.
func encode8Code(dst []byte, x []float32, inv float32) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = byte(int8(quant.Code(v, inv, qmax8)))
	}
}

// encode4 packs the codes of x, which starts on an even column, two per
// byte: PackNibble(Code(x[2j])) | PackNibble(Code(x[2j+1]))<<4. An
// odd-length x (the end of an odd-length row) leaves the last high nibble 0.
func encode4(dst []byte, x []float32, inv float32) {
	pairs := asPairs(x)
	d := dst[:len(pairs)]
	var worst uint32
	for j, p := range pairs {
		u0, u1 := rounded(p[0], inv), rounded(p[1], inv)
		d[j] = byte(u0)&0x0f | byte(u1)<<4
		worst = max(worst, u0-(magicBits-qmax4), u1-(magicBits-qmax4))
	}
	if worst > 2*qmax4 {
		encode4Code(dst, x, inv)
		return
	}
	encode4Tail(dst, x, inv)
}

// encode4Raw is encode4 for a group known to be clamp-free.
func encode4Raw(dst []byte, x []float32, inv float32) {
	pairs := asPairs(x)
	d := dst[:len(pairs)]
	for j, p := range pairs {
		d[j] = byte(rounded(p[0], inv))&0x0f | byte(rounded(p[1], inv))<<4
	}
	encode4Tail(dst, x, inv)
}

// encode4Code is encode4 written with quant.Code and quant.PackNibble.
func encode4Code(dst []byte, x []float32, inv float32) {
	pairs := asPairs(x)
	d := dst[:len(pairs)]
	for j, p := range pairs {
		d[j] = quant.PackNibble(quant.Code(p[0], inv, qmax4)) | quant.PackNibble(quant.Code(p[1], inv, qmax4))<<4
	}
	encode4Tail(dst, x, inv)
}

// encode4Tail writes the last byte of an odd-length x, high nibble 0.
func encode4Tail(dst []byte, x []float32, inv float32) {
	if n := len(x) / 2; len(x) > 2*n {
		dst[n] = quant.PackNibble(quant.Code(x[2*n], inv, qmax4))
	}
}

// asPairs views x[:len(x)/2*2] as consecutive pairs, without copying.
func asPairs(x []float32) [][2]float32 {
	if len(x) < 2 {
		return nil // (*[2]float32) of a lone element would straddle its allocation
	}
	return unsafe.Slice((*[2]float32)(unsafe.Pointer(unsafe.SliceData(x))), len(x)/2)
}

// encode4Odd packs a whole INT4 row whose groups have an odd size, so that a
// byte may hold codes of two groups.
func encode4Odd(p []byte, x []float32, s []uint16, gs int) {
	for g := range s {
		inv := quant.Reciprocal(s[g])
		a := g * gs
		for c := a; c < min(a+gs, len(x)); c++ {
			n := quant.PackNibble(quant.Code(x[c], inv, qmax4))
			if c%2 == 0 {
				p[c/2] = n // also clears the high nibble, written next if it exists
			} else {
				p[c/2] |= n << 4
			}
		}
	}
}
