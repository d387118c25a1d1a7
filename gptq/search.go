package gptq

import (
	"math"

	"github.com/mixq/mixq/quant"
)

// SearchSteps is the number of clipping ratios SearchScale tries:
// α = 1 − SearchStep·i for i = 0 … SearchSteps−1.
const (
	SearchSteps = 21
	SearchStep  = 0.02
)

// AbsMax is the bit pattern's maximum of |x| over finite x.
func AbsMax(x []float32) float32 {
	var m uint32
	for _, v := range x {
		m = max(m, quant.AbsBits(v))
	}
	return math.Float32frombits(m)
}

// GroupError is Σ_j d_j·(x_j − Decode(Code(x_j, 1/s, qmax), s))² in
// binary64, ascending j; d nil means d_j = 1.
func GroupError(x []float32, d []float64, s uint16, qmax int32) float64 {
	inv, sv := quant.Reciprocal(s), quant.ScaleValue(s)
	var e float64
	for j, v := range x {
		r := float64(v) - float64(quant.Decode(quant.Code(v, inv, qmax), sv))
		if d != nil {
			e += float64(d[j] * float64(r*r))
		} else {
			e += float64(r * r)
		}
	}
	return e
}

// SearchScale returns the scale of one group of finite values x with the
// least GroupError among the clipping ratios (see the package
// documentation), and whether every candidate fits binary16; the absmax
// scale wins ties. ok is false only when the absmax scale itself
// overflows, in which case bits is that overflowing scale.
func SearchScale(x []float32, d []float64, p quant.Precision) (bits uint16, ok bool) {
	amax := AbsMax(x)
	best, ok := quant.ScaleBits(amax, p)
	if !ok || best == 0 {
		return best, ok
	}
	qmax := int32(p.QMax())
	bestErr := GroupError(x, d, best, qmax)
	prev := best
	for i := 1; i < SearchSteps && bestErr > 0; i++ {
		a := float32(float64(amax) * (1 - SearchStep*float64(i)))
		s, ok := quant.ScaleBits(a, p)
		if !ok || s == prev || s == 0 {
			continue
		}
		prev = s
		if e := GroupError(x, d, s, qmax); e < bestErr {
			best, bestErr = s, e
		}
	}
	return best, true
}

// SearchScales fills scales ([Rows][GroupsPerRow]) for w with SearchScale,
// d being the per-column weights (len Cols) or nil. A non-finite value is
// a *quant.NonFiniteError with the lowest index, an overflowing absmax
// scale a *quant.ScaleOverflowError, as for a backend's GroupScales.
func SearchScales(scales []uint16, w []float32, d []float64, l quant.Layout) error {
	if err := l.CheckBuffers(w, nil, scales); err != nil {
		return err
	}
	for i, v := range w {
		if !quant.IsFinite(v) {
			return &quant.NonFiniteError{Index: i, Value: v}
		}
	}
	gpr := l.GroupsPerRow()
	var firstErr error
	for r := range l.Rows {
		row := w[r*l.Cols : (r+1)*l.Cols]
		for g := range gpr {
			lo, hi := l.Group(g)
			var dg []float64
			if d != nil {
				dg = d[lo:hi]
			}
			s, ok := SearchScale(row[lo:hi], dg, l.Precision)
			scales[r*gpr+g] = s
			if !ok && firstErr == nil {
				firstErr = &quant.ScaleOverflowError{Row: r, Group: g, AbsMax: AbsMax(row[lo:hi])}
			}
		}
	}
	return firstErr
}
