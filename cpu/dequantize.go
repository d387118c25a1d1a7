package cpu

import (
	"github.com/mixq/mixq/quant"
)

// Dequantize expands packed codes back to binary32:
//
//	w[r][c] = quant.Decode(q, quant.ScaleValue(scales[r][c/GroupSize]))
//
// with q = int8(packed[r][c]) for INT8 and the sign-extended nibble
// (quant.UnpackNibble) for INT4. Every code decodes, including −128 and −8,
// which Quantize never writes; the pad nibble of an odd INT4 row is ignored.
func (b *Backend) Dequantize(w []float32, packed []byte, scales []uint16, l quant.Layout) error {
	if err := checkLayout("dequantize", l, nonNil(w), nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	units := l.NumScales()
	parallel(units, 1, b.chunks(units, l.Elements()), func(_, lo, hi int) {
		dequantize(w, packed, scales, l, lo, hi, b.simd)
	})
	return nil
}

// dequantize decodes the flat groups [lo, hi). Reading needs no alignment:
// the groups of odd size only share bytes, not outputs. With simd, the
// whole groups of a size that is a multiple of simdStep go to
// dequantizeSIMD, the same computation in vector kernels.
func dequantize(w []float32, packed []byte, scales []uint16, l quant.Layout, lo, hi int, simd bool) {
	gpr, gs, cols, rb := l.GroupsPerRow(), l.GroupSize, l.Cols, l.RowBytes()
	int4 := l.Precision == quant.INT4
	simd = simd && gs%simdStep == 0
	whole := cols / gs // groups [0, whole) of a row are not ragged
	for f := lo; f < hi; {
		row := f / gpr
		g0 := f - row*gpr
		g1 := min(gpr, g0+hi-f)
		y := w[row*cols : row*cols+cols]
		s := scales[row*gpr : row*gpr+gpr]
		p := packed[row*rb : row*rb+rb]
		g := g0
		if simd {
			g = max(g0, min(g1, whole))
			dequantizeSIMD(y, p, s, gs, int4, g0, g)
		}
		for ; g < g1; g++ {
			a := g * gs
			e := min(a+gs, cols)
			sv := quant.ScaleValue(s[g])
			switch {
			case !int4:
				decode8(y[a:e], p[a:e], sv)
			case a%2 == 0:
				decode4(y[a:e], p[a/2:(e+1)/2], sv)
			default:
				for c := a; c < e; c++ {
					y[c] = quant.Decode(quant.UnpackNibble(p[c/2]>>(4*(c%2))), sv)
				}
			}
		}
		f += g1 - g0
	}
}

func decode8(y []float32, p []byte, s float32) {
	p = p[:len(y)]
	for i, c := range p {
		y[i] = quant.Decode(int32(int8(c)), s)
	}
}

// decode4 decodes y, which starts on an even column, from p.
func decode4(y []float32, p []byte, s float32) {
	pairs := asPairs(y)
	for j, b := range p[:len(pairs)] {
		pairs[j] = [2]float32{quant.Decode(quant.UnpackNibble(b), s), quant.Decode(quant.UnpackNibble(b>>4), s)}
	}
	if n := len(pairs); len(y) > 2*n {
		y[2*n] = quant.Decode(quant.UnpackNibble(p[n]), s)
	}
}
