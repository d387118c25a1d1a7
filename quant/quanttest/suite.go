package quanttest

import (
	"fmt"
	"math"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
	"github.com/x448/float16"
)

// TestBackend runs the conformance suite: every kernel family of b against
// a fresh plain-Go, single-threaded reference, cpu.Reference(), bit for bit. See the package
// documentation for what it covers.
func TestBackend(t *testing.T, b quant.Backend) {
	seed := Seed(t)
	p := pair{b: b, ref: cpu.Reference()}
	t.Logf("backend %q against the reference %q", b.Name(), p.ref.Name())
	t.Run("Name", func(t *testing.T) {
		if b.Name() == "" {
			t.Fatal("Name is empty")
		}
	})
	t.Run("GroupScales", func(t *testing.T) { p.testGroupScales(t, seed) })
	t.Run("Quantize", func(t *testing.T) { p.testQuantize(t, seed) })
	t.Run("Dequantize", func(t *testing.T) { p.testDequantize(t, seed) })
	t.Run("MatMul", func(t *testing.T) { p.testMatMul(t, seed) })
	t.Run("ChannelStats", func(t *testing.T) { p.testChannelStats(t, seed) })
	t.Run("NonFinite", func(t *testing.T) { p.testNonFinite(t, seed) })
	t.Run("ScaleOverflow", func(t *testing.T) { p.testScaleOverflow(t, seed) })
	t.Run("BadBuffers", func(t *testing.T) { p.testBadBuffers(t) })
	t.Run("Large", func(t *testing.T) { p.testLarge(t, seed) })
	t.Run("QuantizeGroups", func(t *testing.T) {
		f, ok := b.(quant.FusedQuantizer)
		if !ok {
			t.Skipf("backend %q does not implement quant.FusedQuantizer", b.Name())
		}
		p.testQuantizeGroups(t, f, seed)
	})
}

// BoundaryGroupSizes are the group sizes of the boundary cases: tiny, odd
// (INT4 bytes then straddle groups), powers of two, and 172.
var BoundaryGroupSizes = []int{1, 2, 3, 7, 32, 64, 128, 172, 256}

// BoundaryLayouts returns, for every group size g of BoundaryGroupSizes,
// the layouts with Cols in {1, g−1, g, g+1, 2g−1, 2g+1, 172, 300} and one to
// five rows, in precision p.
func BoundaryLayouts(p quant.Precision) []quant.Layout {
	var ls []quant.Layout
	for _, g := range BoundaryGroupSizes {
		seen := map[int]bool{}
		for _, c := range []int{1, g - 1, g, g + 1, 2*g - 1, 2*g + 1, 172, 300} {
			if c < 1 || seen[c] {
				continue
			}
			seen[c] = true
			for rows := 1; rows <= 5; rows++ {
				ls = append(ls, quant.Layout{Rows: rows, Cols: c, GroupSize: g, Precision: p})
			}
		}
	}
	return ls
}

var precisions = []quant.Precision{quant.INT8, quant.INT4}

func (p pair) testGroupScales(t *testing.T, seed uint64) {
	for _, prec := range precisions {
		t.Run(prec.String(), func(t *testing.T) {
			for _, l := range BoundaryLayouts(prec) {
				r := NewRand(seed, "GroupScales "+name(l))
				w := Weights(r, l)
				if _, err := p.groupScales(t, "boundary", w, l); err != nil {
					t.Fatalf("%s: reference rejected finite weights: %v", name(l), err)
				}
			}
		})
	}
}

// alterScales returns variants of valid scales that make Quantize's clamp
// and rounding work harder, while keeping |x·inv| far below 2^22 (where
// Code's rounding is defined): every scale one binary16 ulp smaller and
// larger, and a quarter of it.
func alterScales(s []uint16) map[string][]uint16 {
	down, up, quarter := make([]uint16, len(s)), make([]uint16, len(s)), make([]uint16, len(s))
	for i, b := range s {
		down[i], up[i] = b, b
		if b > 0 {
			down[i] = b - 1
		}
		if b < 0x7bff {
			up[i] = b + 1
		}
		q := uint16(float16.Fromfloat32(quant.ScaleValue(b) / 4))
		if q == 0 && b != 0 {
			q = 1
		}
		quarter[i] = q
	}
	return map[string][]uint16{"scale-1ulp": down, "scale+1ulp": up, "scale/4": quarter}
}

func (p pair) testQuantize(t *testing.T, seed uint64) {
	for _, prec := range precisions {
		t.Run(prec.String(), func(t *testing.T) {
			for _, l := range BoundaryLayouts(prec) {
				r := NewRand(seed, "Quantize "+name(l))
				w := Weights(r, l)
				scales, err := p.groupScales(t, "boundary", w, l)
				if err != nil {
					t.Fatal(err)
				}
				p.quantize(t, "boundary", w, scales, l)
				for what, s := range alterScales(scales) {
					p.quantize(t, "boundary, "+what, w, s, l)
				}
			}
		})
	}
	t.Run("pad nibble", func(t *testing.T) {
		// An odd INT4 row leaves its last high nibble 0, whatever was there.
		l := quant.Layout{Rows: 3, Cols: 5, GroupSize: 2, Precision: quant.INT4}
		w := []float32{1, -2, 3, -4, 7, 7, 6, 5, -4, -7, -1, 0, 1, 2, -3}
		s := []uint16{0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3c00, 0x3c00}
		got := p.quantize(t, "pad", w, s, l)
		want := []byte{0xe1, 0xc3, 0x07, 0x67, 0xc5, 0x09, 0x0f, 0x21, 0x0d}
		RequireEqualBits(t, "INT4 packing of known codes (reference)", got, want)
	})
}

func (p pair) testDequantize(t *testing.T, seed uint64) {
	for _, prec := range precisions {
		t.Run(prec.String(), func(t *testing.T) {
			for _, l := range BoundaryLayouts(prec) {
				r := NewRand(seed, "Dequantize "+name(l))
				w := Weights(r, l)
				scales, err := p.groupScales(t, "boundary", w, l)
				if err != nil {
					t.Fatal(err)
				}
				packed := p.quantize(t, "boundary", w, scales, l)
				p.dequantize(t, "boundary", packed, scales, l)
				// Every code, including -128 and -8, junk pad nibbles, any scale.
				p.dequantize(t, "random codes", Codes(r, l), Scales(r, l, 0x7bff), l)
			}
		})
	}
}

// MatMulLayouts are the weight layouts of the MatMul cases: ragged rows,
// odd INT4 rows, odd groups, more groups than lanes, row counts around the
// multiples of 4 and 8 that kernels block by and the tiles of the CPU
// vector kernels, and the largest group size.
var MatMulLayouts = []quant.Layout{
	{Rows: 5, Cols: 300, GroupSize: 128, Precision: quant.INT8},
	{Rows: 3, Cols: 172, GroupSize: 64, Precision: quant.INT8},
	{Rows: 1, Cols: 1, GroupSize: 1, Precision: quant.INT8},
	{Rows: 6, Cols: 300, GroupSize: 8, Precision: quant.INT8}, // 38 groups: lanes wrap
	{Rows: 9, Cols: 129, GroupSize: 2, Precision: quant.INT8}, // 65 groups
	{Rows: 2, Cols: 4097, GroupSize: 4096, Precision: quant.INT8},
	{Rows: 4, Cols: 77, GroupSize: 32, Precision: quant.INT4},
	{Rows: 3, Cols: 23, GroupSize: 7, Precision: quant.INT4},
	{Rows: 5, Cols: 301, GroupSize: 4, Precision: quant.INT4}, // 76 groups, odd row
	{Rows: 8, Cols: 300, GroupSize: 64, Precision: quant.INT4},
	{Rows: 17, Cols: 172, GroupSize: 128, Precision: quant.INT4},
	// Around the CPU vector kernels' tiles (32 and 64 rows) and transposer
	// steps (32 and 64 columns), with odd groups that straddle them.
	{Rows: 65, Cols: 200, GroupSize: 7, Precision: quant.INT4},
	{Rows: 33, Cols: 130, GroupSize: 64, Precision: quant.INT8},
}

// MatMulMs are the numbers of rows of x in the MatMul cases.
var MatMulMs = []int{1, 2, 3, 7, 8, 9, 16, 63, 64}

func (p pair) testMatMul(t *testing.T, seed uint64) {
	for _, l := range MatMulLayouts {
		t.Run(name(l), func(t *testing.T) {
			for _, m := range MatMulMs {
				r := NewRand(seed, fmt.Sprintf("MatMul m=%d %s", m, name(l)))
				x := Activations(r, m, l.Cols)
				// Codes from real quantization ...
				w := Weights(r, l)
				scales, err := p.groupScales(t, "matmul", w, l)
				if err != nil {
					t.Fatal(err)
				}
				packed := p.quantize(t, "matmul", w, scales, l)
				p.matMul(t, "quantized weights", x, m, packed, scales, l)
				// ... and every code value with scales up to 1.
				p.matMul(t, "random codes", x, m, Codes(r, l), Scales(r, l, 0x3c00), l)
			}
		})
	}
}

// StatsChannels and StatsBatches are the ChannelStats cases: each channel
// count receives the batches in turn, and the statistics are compared after
// each merge.
var (
	StatsChannels = []int{1, 2, 7, 8, 9, 64, 257}
	StatsBatches  = []int{1, 5, 1, 17, 0, 64, 1, 3}
)

func (p pair) testChannelStats(t *testing.T, seed uint64) {
	for _, ch := range StatsChannels {
		t.Run(fmt.Sprint(ch), func(t *testing.T) {
			r := NewRand(seed, fmt.Sprintf("ChannelStats %d", ch))
			s := newStatsPair(ch)
			for _, tokens := range StatsBatches {
				p.channelStats(t, "batches", s, Activations(r, tokens, ch), tokens)
			}
		})
	}
}

// Non-finite values the suite plants, as bit patterns: quiet and signalling
// NaNs with and without payload and sign, and both infinities.
var nonFinite = []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff, 0x7f800000, 0xff800000, 0xffffffff}

var nonFiniteLayouts = []quant.Layout{
	{Rows: 3, Cols: 172, GroupSize: 128, Precision: quant.INT8},
	{Rows: 5, Cols: 300, GroupSize: 64, Precision: quant.INT4},
	{Rows: 1, Cols: 1, GroupSize: 1, Precision: quant.INT8},
	{Rows: 4, Cols: 23, GroupSize: 7, Precision: quant.INT4},
	{Rows: 300, Cols: 1000, GroupSize: 128, Precision: quant.INT8},
	{Rows: 64, Cols: 4096, GroupSize: 64, Precision: quant.INT4},
}

func (p pair) testNonFinite(t *testing.T, seed uint64) {
	for _, l := range nonFiniteLayouts {
		t.Run(name(l), func(t *testing.T) {
			r := NewRand(seed, "NonFinite "+name(l))
			base := Weights(r, l)
			n := len(base)
			gs := l.GroupSize
			// Fixed positions: first, last, first and last of a group, and
			// random ones; one to three values per tensor.
			fixed := []int{0, n - 1, min(gs, n-1), min(gs-1, n-1), min(l.Cols, n-1), n / 2}
			trials := 24
			if l.Elements() > 100000 {
				trials = 6
			}
			for trial := range trials {
				w := append([]float32(nil), base...)
				lowest := n
				for k := range 1 + r.IntN(3) {
					i := r.IntN(n)
					if k == 0 && trial < len(fixed) {
						i = fixed[trial]
					}
					w[i] = math.Float32frombits(nonFinite[r.IntN(len(nonFinite))])
					lowest = min(lowest, i)
				}
				want := &quant.NonFiniteError{Index: lowest, Value: w[lowest]}
				_, err := p.groupScales(t, fmt.Sprintf("trial %d", trial), w, l)
				RequireSameError(t, fmt.Sprintf("trial %d: reference", trial), err, want)
			}
			// A non-finite value wins over an earlier scale overflow.
			w := append([]float32(nil), base...)
			w[0] = 3e38
			w[n-1] = float32(math.NaN())
			_, err := p.groupScales(t, "overflow before NaN", w, l)
			RequireSameError(t, "overflow before NaN: reference", err, &quant.NonFiniteError{Index: n - 1, Value: w[n-1]})
		})
	}
}

// ScaleLimit returns the largest absolute maximum whose scale fits binary16
// in precision p (its scale is 65504), and the next binary32 value, the
// smallest that overflows.
func ScaleLimit(p quant.Precision) (ok, over float32) {
	over = float32(65520 * p.QMax()) // s32 = 65520 rounds to +Inf in binary16
	for {
		if _, fits := quant.ScaleBits(over, p); fits {
			break
		}
		over = math.Nextafter32(over, 0)
	}
	return over, math.Nextafter32(over, float32(math.Inf(1)))
}

func (p pair) testScaleOverflow(t *testing.T, seed uint64) {
	layouts := []quant.Layout{
		{Rows: 4, Cols: 300, GroupSize: 64, Precision: quant.INT8},
		{Rows: 3, Cols: 172, GroupSize: 128, Precision: quant.INT4},
		{Rows: 2, Cols: 3, GroupSize: 1, Precision: quant.INT4},
		{Rows: 256, Cols: 1024, GroupSize: 128, Precision: quant.INT8},
	}
	for _, l := range layouts {
		t.Run(name(l), func(t *testing.T) {
			r := NewRand(seed, "ScaleOverflow "+name(l))
			ok, over := ScaleLimit(l.Precision)
			qmax := float32(l.Precision.QMax())
			base := Weights(r, l)
			for i, v := range base { // keep the rest well inside the range
				base[i] = v / 65536
			}
			gpr := l.GroupsPerRow()
			at := func() (row, g, i int) {
				row, g = r.IntN(l.Rows), r.IntN(gpr)
				lo, hi := l.Group(g)
				return row, g, row*l.Cols + lo + r.IntN(hi-lo)
			}
			trials := 8
			if l.Elements() > 100000 {
				trials = 2
			}
			for trial := range trials {
				sign := float32(1 - 2*r.IntN(2))
				// Just under the limit, and exactly 65504·qmax: no error, scale 65504.
				for _, a := range []float32{ok, 65504 * qmax} {
					w := append([]float32(nil), base...)
					row, g, i := at()
					w[i] = sign * a
					scales, err := p.groupScales(t, fmt.Sprintf("trial %d, absmax %g", trial, a), w, l)
					if err != nil {
						t.Fatalf("absmax %g: reference: %v", a, err)
					}
					if s := scales[row*gpr+g]; s != 0x7bff {
						t.Fatalf("absmax %g: reference scale 0x%04x, want 0x7bff", a, s)
					}
					p.quantize(t, "near the limit", w, scales, l)
				}
				// Just over the limit, and far over it; two overflowing groups.
				for _, a := range []float32{over, 3e38} {
					w := append([]float32(nil), base...)
					row, g, i := at()
					w[i] = sign * a
					if trial%2 == 1 {
						row2, g2, i2 := at()
						w[i2] = over
						if row2*gpr+g2 < row*gpr+g {
							row, g = row2, g2
						}
					}
					lo, hi := l.Group(g)
					var amax float32
					for _, v := range w[row*l.Cols+lo : row*l.Cols+hi] {
						amax = max(amax, float32(math.Abs(float64(v))))
					}
					want := &quant.ScaleOverflowError{Row: row, Group: g, AbsMax: amax}
					_, err := p.groupScales(t, fmt.Sprintf("trial %d, absmax %g", trial, a), w, l)
					RequireSameError(t, "reference", err, want)
				}
			}
		})
	}
}

func (p pair) testLarge(t *testing.T, seed uint64) {
	// Sizes at which a parallel backend splits its work.
	for _, l := range []quant.Layout{
		{Rows: 300, Cols: 1000, GroupSize: 128, Precision: quant.INT8},
		{Rows: 300, Cols: 1000, GroupSize: 128, Precision: quant.INT4},
		{Rows: 101, Cols: 1001, GroupSize: 7, Precision: quant.INT4},
		{Rows: 64, Cols: 4096, GroupSize: 64, Precision: quant.INT8},
	} {
		t.Run(name(l), func(t *testing.T) {
			r := NewRand(seed, "Large "+name(l))
			w := Weights(r, l)
			scales, err := p.groupScales(t, "large", w, l)
			if err != nil {
				t.Fatal(err)
			}
			packed := p.quantize(t, "large", w, scales, l)
			p.dequantize(t, "large", packed, scales, l)
			for _, m := range []int{1, 16} {
				p.matMul(t, "large", Activations(r, m, l.Cols), m, packed, scales, l)
			}
		})
	}
	t.Run("ChannelStats", func(t *testing.T) {
		r := NewRand(seed, "Large ChannelStats")
		const ch = 4096
		s := newStatsPair(ch)
		for _, tokens := range []int{64, 1, 33} {
			p.channelStats(t, "large", s, Activations(r, tokens, ch), tokens)
		}
	})
}

// badCall is an invalid call that every backend must reject with an error,
// without panicking and without writing to the output it was given.
type badCall struct {
	what string
	run  func(b quant.Backend) error
}

func (p pair) testBadBuffers(t *testing.T) {
	l := quant.Layout{Rows: 3, Cols: 5, GroupSize: 2, Precision: quant.INT4}
	w := make([]float32, l.Elements())
	packed := make([]byte, l.PackedBytes())
	scales := make([]uint16, l.NumScales())
	x := make([]float32, 2*l.Cols)
	y := make([]float32, 2*l.Rows)
	layouts := map[string]quant.Layout{
		"group size 0":        {Rows: 3, Cols: 5, GroupSize: 0, Precision: quant.INT4},
		"group size too big":  {Rows: 3, Cols: 5, GroupSize: quant.MaxGroupSize + 1, Precision: quant.INT4},
		"no rows":             {Rows: 0, Cols: 5, GroupSize: 2, Precision: quant.INT4},
		"negative cols":       {Rows: 3, Cols: -5, GroupSize: 2, Precision: quant.INT4},
		"precision f16":       {Rows: 3, Cols: 5, GroupSize: 2, Precision: quant.F16},
		"precision invalid":   {Rows: 3, Cols: 5, GroupSize: 2, Precision: 0},
		"int8 with int4 bufs": {Rows: 3, Cols: 5, GroupSize: 2, Precision: quant.INT8},
	}
	var calls []badCall
	for what, bl := range layouts {
		if bl.Precision != quant.INT8 { // w and scales fit the INT8 layout: only the codes do not
			calls = append(calls, badCall{"GroupScales, " + what, func(b quant.Backend) error { return b.GroupScales(scales, w, bl) }})
		}
		calls = append(calls,
			badCall{"Quantize, " + what, func(b quant.Backend) error { return b.Quantize(packed, w, scales, bl) }},
			badCall{"Dequantize, " + what, func(b quant.Backend) error { return b.Dequantize(w, packed, scales, bl) }},
			badCall{"MatMul, " + what, func(b quant.Backend) error { return b.MatMul(y, x, 2, packed, scales, bl) }},
		)
	}
	short := func(n int) []float32 { return make([]float32, n) }
	calls = append(calls,
		badCall{"GroupScales, short w", func(b quant.Backend) error { return b.GroupScales(scales, short(len(w)-1), l) }},
		badCall{"GroupScales, long w", func(b quant.Backend) error { return b.GroupScales(scales, short(len(w)+1), l) }},
		badCall{"GroupScales, nil w", func(b quant.Backend) error { return b.GroupScales(scales, nil, l) }},
		badCall{"GroupScales, short scales", func(b quant.Backend) error { return b.GroupScales(scales[:len(scales)-1], w, l) }},
		badCall{"GroupScales, nil scales", func(b quant.Backend) error { return b.GroupScales(nil, w, l) }},
		badCall{"Quantize, short packed", func(b quant.Backend) error { return b.Quantize(packed[:len(packed)-1], w, scales, l) }},
		badCall{"Quantize, nil packed", func(b quant.Backend) error { return b.Quantize(nil, w, scales, l) }},
		badCall{"Quantize, short w", func(b quant.Backend) error { return b.Quantize(packed, short(len(w)-1), scales, l) }},
		badCall{"Quantize, nil w", func(b quant.Backend) error { return b.Quantize(packed, nil, scales, l) }},
		badCall{"Quantize, short scales", func(b quant.Backend) error { return b.Quantize(packed, w, scales[:1], l) }},
		badCall{"Quantize, nil scales", func(b quant.Backend) error { return b.Quantize(packed, w, nil, l) }},
		badCall{"Dequantize, short w", func(b quant.Backend) error { return b.Dequantize(short(len(w)-1), packed, scales, l) }},
		badCall{"Dequantize, nil w", func(b quant.Backend) error { return b.Dequantize(nil, packed, scales, l) }},
		badCall{"Dequantize, long packed", func(b quant.Backend) error { return b.Dequantize(w, append(packed, 0), scales, l) }},
		badCall{"Dequantize, nil packed", func(b quant.Backend) error { return b.Dequantize(w, nil, scales, l) }},
		badCall{"Dequantize, nil scales", func(b quant.Backend) error { return b.Dequantize(w, packed, nil, l) }},
		badCall{"MatMul, m 0", func(b quant.Backend) error { return b.MatMul(y[:0], x[:0], 0, packed, scales, l) }},
		badCall{"MatMul, m -1", func(b quant.Backend) error { return b.MatMul(y, x, -1, packed, scales, l) }},
		badCall{"MatMul, m too big", func(b quant.Backend) error { return b.MatMul(y, x, 3, packed, scales, l) }},
		badCall{"MatMul, short x", func(b quant.Backend) error { return b.MatMul(y, x[:len(x)-1], 2, packed, scales, l) }},
		badCall{"MatMul, short y", func(b quant.Backend) error { return b.MatMul(y[:len(y)-1], x, 2, packed, scales, l) }},
		badCall{"MatMul, nil y", func(b quant.Backend) error { return b.MatMul(nil, x, 2, packed, scales, l) }},
		badCall{"MatMul, nil packed", func(b quant.Backend) error { return b.MatMul(y, x, 2, nil, scales, l) }},
		badCall{"MatMul, nil scales", func(b quant.Backend) error { return b.MatMul(y, x, 2, packed, nil, l) }},
		badCall{"MatMul, short packed", func(b quant.Backend) error { return b.MatMul(y, x, 2, packed[1:], scales, l) }},
		badCall{"ChannelStats, nil stats", func(b quant.Backend) error { return b.ChannelStats(nil, x, 2) }},
		badCall{"ChannelStats, short x", func(b quant.Backend) error { return b.ChannelStats(quant.NewStats(5), x[:9], 2) }},
		badCall{"ChannelStats, long x", func(b quant.Backend) error { return b.ChannelStats(quant.NewStats(5), x, 1) }},
		badCall{"ChannelStats, negative tokens", func(b quant.Backend) error { return b.ChannelStats(quant.NewStats(5), x[:0], -1) }},
		badCall{"ChannelStats, M2 too short", func(b quant.Backend) error {
			return b.ChannelStats(&quant.Stats{Mean: make([]float64, 5), M2: make([]float64, 4)}, x, 2)
		}},
	)
	const finite = 0x3fb1b1b1 // w is an input of most calls: keep it finite
	fill := func() {
		for i := range w {
			w[i] = math.Float32frombits(finite)
		}
		for i := range packed {
			packed[i] = testBits8
		}
		for i := range scales {
			scales[i] = testBits16
		}
		for i := range y {
			y[i] = math.Float32frombits(testBits32)
		}
	}
	untouched := func(what string) {
		t.Helper()
		for i, v := range w {
			if math.Float32bits(v) != finite {
				t.Fatalf("%s: wrote w[%d] before failing", what, i)
			}
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
		for i, v := range y {
			if math.Float32bits(v) != testBits32 {
				t.Fatalf("%s: wrote y[%d] before failing", what, i)
			}
		}
	}
	for _, c := range calls {
		// Outputs hold a pattern that must survive the rejected call.
		fill()
		if err := c.run(p.ref); err == nil {
			t.Fatalf("%s: the reference accepted it", c.what)
		}
		untouched(c.what + " (reference)")
		err := call(t, c.what, func() error { return c.run(p.b) })
		if err == nil {
			t.Errorf("%s: no error", c.what)
			continue
		}
		untouched(c.what)
	}
}
