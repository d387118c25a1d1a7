package cpu

import (
	"github.com/mixq/mixq/quant"
)

// QuantizeGroups is GroupScales(scales, w, l) followed, when that succeeds,
// by Quantize(packed, w, scales, l), in a single pass over w: each group is
// reduced to its scale and encoded while it is still in the L1 cache, and its
// absolute maximum tells once per group whether the clamp of quant.Code can
// matter. The results and errors are bit for bit those of the two calls;
// after an error the contents of scales and packed are unspecified.
//
// It is not part of quant.Backend: callers holding a *cpu.Backend use it to
// halve the memory traffic of quantizing a tensor.
func (b *Backend) QuantizeGroups(packed []byte, scales []uint16, w []float32, l quant.Layout) error {
	if err := checkLayout("quantizegroups", l, nonNil(w), nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	units, align := l.NumScales(), 1
	if l.Precision == quant.INT4 && l.GroupSize%2 != 0 {
		align = l.GroupsPerRow() // odd groups share bytes: split on rows
	}
	n := b.chunks(units/align, l.Elements())
	if n == 1 {
		var r scaleResult
		r.reset()
		quantizeGroups(packed, scales, w, l, 0, units, &r, b.simd)
		return r.err(l)
	}
	res := make([]scaleResult, n)
	parallel(units, align, n, func(c, lo, hi int) {
		res[c].reset()
		quantizeGroups(packed, scales, w, l, lo, hi, &res[c], b.simd)
	})
	return firstError(res, l)
}

// quantizeGroups handles the flat groups [lo, hi) like groupScales and, as
// long as no error has been seen, encodes them like quantize. With simd,
// the whole groups of a size that is a multiple of simdStep go to
// quantizeGroupsSIMD, the same computation in vector kernels.
func quantizeGroups(packed []byte, scales []uint16, w []float32, l quant.Layout, lo, hi int, r *scaleResult, simd bool) {
	gpr, gs, cols, rb, p := l.GroupsPerRow(), l.GroupSize, l.Cols, l.RowBytes(), l.Precision
	int4, odd := p == quant.INT4, p == quant.INT4 && gs%2 != 0
	simd = simd && gs%simdStep == 0 // hence even: never odd
	whole := cols / gs              // groups [0, whole) of a row are not ragged
	for f := lo; f < hi; {
		row := f / gpr
		g0 := f - row*gpr
		g1 := min(gpr, g0+hi-f)
		x := w[row*cols : row*cols+cols]
		s := scales[row*gpr : row*gpr+gpr]
		d := packed[row*rb : row*rb+rb]
		g := g0
		if simd {
			if quantizeGroupsSIMD(d, s, x, l, row, g0, min(g1, whole), r) {
				return
			}
			g = max(g0, min(g1, whole))
		}
		for ; g < g1; g++ {
			a := g * gs
			e := min(a+gs, cols)
			grp := x[a:e]
			amax, ok := r.scale(s, grp, p, row, g, a, cols, gpr)
			if !ok {
				return
			}
			if r.overflow >= 0 || odd {
				continue // nothing more to encode; or encoded by whole rows below
			}
			inv := quant.Reciprocal(s[g])
			switch free := clampFree(amax, inv, qmaxOf(int4)); {
			case !int4 && free:
				encode8Raw(d[a:e], grp, inv)
			case !int4:
				encode8Code(d[a:e], grp, inv)
			case free:
				encode4Raw(d[a/2:(e+1)/2], grp, inv)
			default:
				encode4Code(d[a/2:(e+1)/2], grp, inv)
			}
		}
		if odd && r.overflow < 0 {
			encode4Odd(d, x, s, gs) // a whole row (g0 == 0, g1 == gpr)
		}
		f += g1 - g0
	}
}

func qmaxOf(int4 bool) uint32 {
	if int4 {
		return qmax4
	}
	return qmax8
}
