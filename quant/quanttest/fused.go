package quanttest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/mixq/mixq/quant"
)

// FusedGroupSizes are the group sizes of the QuantizeGroups cases: those of
// BoundaryGroupSizes and the multiples of 8 and 16 that vector kernels
// take whole (8, 16, 24, 40, 136), up to the largest group.
var FusedGroupSizes = []int{1, 2, 3, 7, 8, 16, 24, 32, 40, 64, 128, 136, 172, 256, quant.MaxGroupSize}

// FusedLayouts returns, for every group size g of FusedGroupSizes, the
// layouts with Cols in {1, g−1, g, g+1, 2g−1, 2g+1, 3g, 172, 300, 4100}
// (4100 has more groups than a kernel takes in one round, and a ragged
// end for most g) and 1, 2 or 5 rows, in precision p.
func FusedLayouts(p quant.Precision) []quant.Layout {
	var ls []quant.Layout
	for _, g := range FusedGroupSizes {
		seen := map[int]bool{}
		for _, c := range []int{1, g - 1, g, g + 1, 2*g - 1, 2*g + 1, 3 * g, 172, 300, 4100} {
			if c < 1 || seen[c] {
				continue
			}
			seen[c] = true
			for _, rows := range []int{1, 2, 5} {
				ls = append(ls, quant.Layout{Rows: rows, Cols: c, GroupSize: g, Precision: p})
			}
		}
	}
	return ls
}

// testQuantizeGroups checks a quant.FusedQuantizer: QuantizeGroups must give
// the scales, codes and error of the reference's GroupScales followed (when
// that succeeds) by Quantize, bit for bit, without touching the guards
// around its outputs or modifying w.
func (p pair) testQuantizeGroups(t *testing.T, f quant.FusedQuantizer, seed uint64) {
	variants := 2 // error variants per layout, drawn at random
	if testing.Short() {
		variants = 1
	}
	for _, prec := range precisions {
		t.Run(prec.String(), func(t *testing.T) {
			for _, l := range FusedLayouts(prec) {
				r := NewRand(seed, "QuantizeGroups "+name(l))
				w := Weights(r, l)
				p.quantizeGroups(t, f, "boundary", w, l)
				for range variants {
					what, v := fusedVariant(r, w, l)
					p.quantizeGroups(t, f, what, v, l)
				}
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		// Every variant on a few layouts, including ones large enough for a
		// parallel backend to split (only one of those under -short).
		layouts := []quant.Layout{
			{Rows: 3, Cols: 300, GroupSize: 128, Precision: quant.INT8},
			{Rows: 4, Cols: 260, GroupSize: 8, Precision: quant.INT4},
			{Rows: 5, Cols: 23, GroupSize: 7, Precision: quant.INT4},
			{Rows: 2, Cols: 4100, GroupSize: 16, Precision: quant.INT8},
			{Rows: 101, Cols: 1001, GroupSize: 7, Precision: quant.INT4},
		}
		if !testing.Short() {
			layouts = append(layouts,
				quant.Layout{Rows: 300, Cols: 1000, GroupSize: 128, Precision: quant.INT8},
				quant.Layout{Rows: 64, Cols: 4096, GroupSize: 128, Precision: quant.INT4})
		}
		for _, l := range layouts {
			r := NewRand(seed, "QuantizeGroups errors "+name(l))
			w := Weights(r, l)
			p.quantizeGroups(t, f, "finite", w, l)
			for k := range fusedVariants {
				what, v := fusedVariantK(r, w, l, k)
				p.quantizeGroups(t, f, what, v, l)
			}
		}
	})
	t.Run("BadBuffers", func(t *testing.T) { p.testFusedBadBuffers(t, f) })
}

// fusedVariants is the number of kinds of input fusedVariantK plants.
const fusedVariants = 8

func fusedVariant(r *rand.Rand, w []float32, l quant.Layout) (string, []float32) {
	return fusedVariantK(r, w, l, r.IntN(fusedVariants))
}

// fusedVariantK returns a copy of w with special values planted, of kind k:
// a non-finite value at the first element, at the last, at the first or
// last element of a random group, or anywhere (one to three of them); an
// overflowing absolute maximum (just over the limit or 3e38, one or two
// groups); an overflow before a non-finite value; and absolute maxima
// exactly at the limit, which are not errors.
func fusedVariantK(r *rand.Rand, w []float32, l quant.Layout, k int) (string, []float32) {
	v := slices.Clone(w)
	n := len(v)
	ok, over := ScaleLimit(l.Precision)
	nf := func() float32 { return math.Float32frombits(nonFinite[r.IntN(len(nonFinite))]) }
	inGroup := func(last bool) int {
		row, g := r.IntN(l.Rows), r.IntN(l.GroupsPerRow())
		lo, hi := l.Group(g)
		if last {
			return row*l.Cols + hi - 1
		}
		return row*l.Cols + lo
	}
	switch k {
	case 0:
		v[0] = nf()
		return "non-finite first", v
	case 1:
		v[n-1] = nf()
		return "non-finite last", v
	case 2:
		v[inGroup(r.IntN(2) == 0)] = nf()
		return "non-finite at a group edge", v
	case 3:
		for range 1 + r.IntN(3) {
			v[r.IntN(n)] = nf()
		}
		return "non-finite values", v
	case 4:
		v[r.IntN(n)] = []float32{over, -over, 3e38, -3e38}[r.IntN(4)]
		if r.IntN(2) == 0 {
			v[r.IntN(n)] = over
		}
		return "scale overflow", v
	case 5:
		i := r.IntN(n)
		v[i] = -3e38
		v[i+r.IntN(n-i)] = nf() // possibly on the overflowing element itself
		return "overflow and non-finite", v
	case 6:
		v[inGroup(false)] = -ok
		v[inGroup(true)] = ok
		return "absmax at the limit", v
	default:
		v[r.IntN(n)] = over
		v[inGroup(r.IntN(2) == 0)] = nf()
		return "overflow, non-finite at a group edge", v
	}
}

// quantizeGroups compares QuantizeGroups on f with GroupScales and Quantize
// on the reference.
func (p pair) quantizeGroups(t testing.TB, f quant.FusedQuantizer, what string, w []float32, l quant.Layout) {
	t.Helper()
	what = fmt.Sprintf("%s: QuantizeGroups %s", what, name(l))
	w0 := slices.Clone(w)
	gotS, wantS := testU16(l.NumScales()), refU16(l.NumScales())
	gotP, wantP := testU8(l.PackedBytes()), refU8(l.PackedBytes())
	gerr := call(t, what, func() error { return f.QuantizeGroups(gotP.In, gotS.In, w, l) })
	werr := p.ref.GroupScales(wantS.In, w, l)
	if werr == nil {
		if err := p.ref.Quantize(wantP.In, w, wantS.In, l); err != nil {
			t.Fatalf("%s: reference Quantize failed: %v", what, err)
		}
	}
	gotS.Check(t, what+": scales")
	gotP.Check(t, what+": packed")
	unchanged(t, what, w0, w)
	RequireSameError(t, what, gerr, werr)
	if werr == nil {
		RequireEqualBits(t, what+": scales", gotS.In, wantS.In)
		RequireEqualBits(t, what+": packed", gotP.In, wantP.In)
	}
}

// testFusedBadBuffers checks that QuantizeGroups rejects a wrong layout or
// buffer size with an error, without writing to its outputs.
func (p pair) testFusedBadBuffers(t *testing.T, f quant.FusedQuantizer) {
	l := quant.Layout{Rows: 3, Cols: 40, GroupSize: 8, Precision: quant.INT4}
	w := make([]float32, l.Elements())
	for i := range w {
		w[i] = float32(i) - 50
	}
	packed := make([]byte, l.PackedBytes())
	scales := make([]uint16, l.NumScales())
	calls := map[string]func() error{
		"group size 0": func() error {
			return f.QuantizeGroups(packed, scales, w, quant.Layout{Rows: 3, Cols: 40, Precision: quant.INT4})
		},
		"precision f32": func() error {
			return f.QuantizeGroups(packed, scales, w, quant.Layout{Rows: 3, Cols: 40, GroupSize: 8, Precision: quant.F32})
		},
		"int8 layout": func() error {
			return f.QuantizeGroups(packed, scales, w, quant.Layout{Rows: 3, Cols: 40, GroupSize: 8, Precision: quant.INT8})
		},
		"short w":      func() error { return f.QuantizeGroups(packed, scales, w[:len(w)-1], l) },
		"nil w":        func() error { return f.QuantizeGroups(packed, scales, nil, l) },
		"short packed": func() error { return f.QuantizeGroups(packed[:len(packed)-1], scales, w, l) },
		"nil packed":   func() error { return f.QuantizeGroups(nil, scales, w, l) },
		"long scales":  func() error { return f.QuantizeGroups(packed, append(scales, 0), w, l) },
		"nil scales":   func() error { return f.QuantizeGroups(packed, nil, w, l) },
		"short scales": func() error { return f.QuantizeGroups(packed, scales[:1], w, l) },
		"rows beyond w": func() error {
			return f.QuantizeGroups(packed, scales, w, quant.Layout{Rows: 4, Cols: 40, GroupSize: 8, Precision: quant.INT4})
		},
	}
	for what, run := range calls {
		for i := range packed {
			packed[i] = testBits8
		}
		for i := range scales {
			scales[i] = testBits16
		}
		what = "QuantizeGroups, " + what
		if err := call(t, what, run); err == nil {
			t.Errorf("%s: no error", what)
		}
		for i, v := range packed {
			if v != testBits8 {
				t.Fatalf("%s: wrote packed[%d] before failing", what, i)
			}
		}
		for i, v := range scales {
			if v != testBits16 {
				t.Fatalf("%s: wrote scales[%d] before failing", what, i)
			}
		}
	}
}
