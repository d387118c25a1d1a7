package cpu

import (
	"math"
	"unsafe"

	"github.com/mixq/mixq/quant"
)

// nonFiniteBits is the smallest AbsBits of a NaN or ±Inf: any absolute value
// at or above it has an all-ones exponent.
const nonFiniteBits = 0x7f800000

// GroupScales computes the binary16 scale of every group of w:
//
//	scales[r][g] = quant.ScaleBits(amax, precision)
//	amax = the float32 whose bits are max(quant.AbsBits(x)) over the group
//
// A NaN or ±Inf anywhere in w gives *quant.NonFiniteError with the lowest
// flat index, whatever else is wrong; otherwise the first overflowing group
// in row-major order gives *quant.ScaleOverflowError with its (positive)
// absolute maximum. After an error the contents of scales are unspecified.
func (b *Backend) GroupScales(scales []uint16, w []float32, l quant.Layout) error {
	if err := checkLayout("groupscales", l, nonNil(w), nil, nonNil(scales)); err != nil {
		return err
	}
	units := l.NumScales()
	n := b.chunks(units, l.Elements())
	if n == 1 {
		var r scaleResult
		r.reset()
		groupScales(scales, w, l, 0, units, &r)
		return r.err(l)
	}
	res := make([]scaleResult, n)
	parallel(units, 1, n, func(c, lo, hi int) {
		res[c].reset()
		groupScales(scales, w, l, lo, hi, &res[c])
	})
	return firstError(res, l)
}

// firstError merges the results of ascending chunks: the first chunk
// reporting a non-finite value holds the lowest index, and so on for
// overflows; a non-finite value anywhere wins over any overflow.
func firstError(res []scaleResult, l quant.Layout) error {
	for i := range res {
		if res[i].nonFinite >= 0 {
			return res[i].err(l)
		}
	}
	for i := range res {
		if res[i].overflow >= 0 {
			return res[i].err(l)
		}
	}
	return nil
}

// scaleResult is what one worker found: the lowest non-finite flat index
// and the lowest overflowing flat group index in its range, or -1.
type scaleResult struct {
	nonFinite int
	value     float32
	overflow  int
	amax      float32
}

func (r *scaleResult) reset() { *r = scaleResult{nonFinite: -1, overflow: -1} }

func (r *scaleResult) err(l quant.Layout) error {
	if r.nonFinite >= 0 {
		return &quant.NonFiniteError{Index: r.nonFinite, Value: r.value}
	}
	if r.overflow >= 0 {
		gpr := l.GroupsPerRow()
		return &quant.ScaleOverflowError{Row: r.overflow / gpr, Group: r.overflow % gpr, AbsMax: r.amax}
	}
	return nil
}

// groupScales handles the flat groups [lo, hi) (row-major over
// [Rows][GroupsPerRow]). It stops at the first non-finite element, since no
// later one can have a lower index.
func groupScales(scales []uint16, w []float32, l quant.Layout, lo, hi int, r *scaleResult) {
	gpr, gs, cols, p := l.GroupsPerRow(), l.GroupSize, l.Cols, l.Precision
	for f := lo; f < hi; {
		row := f / gpr
		g0 := f - row*gpr
		g1 := min(gpr, g0+hi-f)
		x := w[row*cols : row*cols+cols]
		s := scales[row*gpr : row*gpr+gpr]
		for g := g0; g < g1; g++ {
			a := g * gs
			if _, ok := r.scale(s, x[a:min(a+gs, cols)], p, row, g, a, cols, gpr); !ok {
				return
			}
		}
		f += g1 - g0
	}
}

// absMaxBits is the largest quant.AbsBits over x: the bit pattern of the
// absolute maximum when every element is finite, and nonFiniteBits or more
// when one is not. It reads x as uint32 (the same bits quant.AbsBits takes)
// so that the loop stays in integer registers; four running maxima break the
// dependency chain, and max is exact, so the order does not matter.
func absMaxBits(x []float32) uint32 {
	u := asBits(x)
	var m0, m1, m2, m3 uint32
	for len(u) >= 4 {
		m0 = max(m0, u[0]&absMask)
		m1 = max(m1, u[1]&absMask)
		m2 = max(m2, u[2]&absMask)
		m3 = max(m3, u[3]&absMask)
		u = u[4:]
	}
	for _, v := range u {
		m0 = max(m0, v&absMask)
	}
	return max(m0, m1, m2, m3)
}

// absMask is the mask of quant.AbsBits.
const absMask = 0x7fffffff

// asBits views float32s as their IEEE bit patterns, without copying.
func asBits(x []float32) []uint32 {
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
}

// firstNonFinite is the index of the first NaN or ±Inf in x, which must hold one.
func firstNonFinite(x []float32) int {
	for i, v := range x {
		if !quant.IsFinite(v) {
			return i
		}
	}
	panic("cpu: firstNonFinite: no non-finite value")
}

// scale computes the scale of group g of row (its elements grp, starting
// at column a) into s[g] and returns the group's absolute maximum. It
// records the group's non-finite element and returns false, ending the scan,
// or records the first overflowing group and goes on, since a later NaN
// still wins over an overflow.
func (r *scaleResult) scale(s []uint16, grp []float32, p quant.Precision, row, g, a, cols, gpr int) (float32, bool) {
	m := absMaxBits(grp)
	if m >= nonFiniteBits {
		i := firstNonFinite(grp)
		r.nonFinite, r.value = row*cols+a+i, grp[i]
		return 0, false
	}
	amax := math.Float32frombits(m)
	bits, ok := quant.ScaleBits(amax, p)
	s[g] = bits
	if !ok && r.overflow < 0 {
		r.overflow, r.amax = row*gpr+g, amax
	}
	return amax, true
}
