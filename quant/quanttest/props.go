package quanttest

import (
	"fmt"
	"math"
	"testing"

	"github.com/mixq/mixq/quant"
)

// TestProperties checks properties of the arithmetic that need no second
// backend: the quantization error bound, requantization as a fixed point,
// the byte and nibble order, rounding, the binary16 scale conversion, the
// exactness of Decode, and the accuracy of MatMul and ChannelStats against
// binary64. Kernels run on b; the scalar steps are those of package quant.
// The exhaustive sweeps are cut down under -short.
func TestProperties(t *testing.T, b quant.Backend) {
	seed := Seed(t)
	t.Run("ErrorBound", func(t *testing.T) { testErrorBound(t, b, seed) })
	t.Run("Requantize", func(t *testing.T) { testRequantize(t, b, seed) })
	t.Run("PackOrder", func(t *testing.T) { testPackOrder(t, b) })
	t.Run("Code", func(t *testing.T) { testCode(t, seed) })
	t.Run("ScaleBits", func(t *testing.T) { testScaleBits(t, seed) })
	t.Run("Reciprocal", testReciprocal)
	t.Run("Decode", testDecode)
	t.Run("Nibbles", testNibbles)
	t.Run("MatMulAccuracy", func(t *testing.T) { testMatMulAccuracy(t, b, seed) })
	t.Run("ChannelStatsAccuracy", func(t *testing.T) { testStatsAccuracy(t, b, seed) })
}

// quantizeAll runs GroupScales, Quantize and Dequantize on b.
func quantizeAll(t *testing.T, b quant.Backend, w []float32, l quant.Layout) (scales []uint16, packed []byte, deq []float32) {
	t.Helper()
	scales = make([]uint16, l.NumScales())
	packed = make([]byte, l.PackedBytes())
	deq = make([]float32, l.Elements())
	if err := b.GroupScales(scales, w, l); err != nil {
		t.Fatalf("GroupScales %s: %v", name(l), err)
	}
	if err := b.Quantize(packed, w, scales, l); err != nil {
		t.Fatalf("Quantize %s: %v", name(l), err)
	}
	if err := b.Dequantize(deq, packed, scales, l); err != nil {
		t.Fatalf("Dequantize %s: %v", name(l), err)
	}
	return scales, packed, deq
}

// codeAt reads the code of column c of row r.
func codeAt(packed []byte, l quant.Layout, r, c int) int32 {
	if l.Precision == quant.INT8 {
		return int32(int8(packed[r*l.RowBytes()+c]))
	}
	return quant.UnpackNibble(packed[r*l.RowBytes()+c/2] >> (4 * (c % 2)))
}

// propertyLayouts are the layouts of the single-backend property tests.
func propertyLayouts() []quant.Layout {
	ls := []quant.Layout{
		{Rows: 64, Cols: 1000, GroupSize: 128, Precision: quant.INT8},
		{Rows: 64, Cols: 1000, GroupSize: 128, Precision: quant.INT4},
		{Rows: 64, Cols: 301, GroupSize: 7, Precision: quant.INT4},
		{Rows: 64, Cols: 300, GroupSize: 32, Precision: quant.INT8},
	}
	for _, l := range BoundaryLayouts(quant.INT8) {
		if l.Rows == 5 {
			ls = append(ls, l, quant.Layout{Rows: 5, Cols: l.Cols, GroupSize: l.GroupSize, Precision: quant.INT4})
		}
	}
	return ls
}

// The quantization error bound, with s the stored scale (a binary32 value),
// inv = f32(1/s), v = f32(x·inv) and u = 2^-24:
//
//   - When the clamp is inert, q = rint(v) and |v − x/s| ≤ |x/s|·(2u + u²),
//     since inv and v each carry one rounding; so
//     |x − q·s| ≤ s/2 + |x|·2^-22.
//     (Not s/2 alone: at a near-tie the two roundings can pick the farther
//     integer.)
//   - The clamp can act only when s16 was rounded down from s32 = f32(amax/qmax),
//     and then |v| ≤ qmax·(s32/s)·(1+u)². For a normal binary16 s,
//     s32/s ≤ 1 + 2^-11, so |v| < qmax + 0.07 and rint(v) ≤ qmax: the clamp
//     never acts. For a subnormal s (s < 2^-14) the rounding can lose up to
//     half a subnormal ulp, 2^-25, so s32/s < 1.5 and the clamp acts; then
//     q = ±qmax and |x − q·s| = |x| − qmax·s ≤ qmax·(s32 − s) + amax·2u
//     ≤ qmax·2^-25 + |x|·2^-22 (amax exceeds |x| by at most a factor 1.5).
//
// So the asserted bound is |x − q·s| ≤ s/2 + |x|·2^-22 where the clamp did
// not act, and ≤ qmax·2^-25 + |x|·2^-22 where it did, which must only happen
// on subnormal scales. The bound |x − q·s| ≤ s/2 + |x|·2^-10 does not hold
// there: for s = 2^-24 and amax just under 1.5·qmax·2^-24 the error is
// almost qmax·2^-25, about qmax/2 times s. Also checked: |v| ≤ qmax·(1+2^-11)·(1+2^-22)
// for normal scales and |v| < 1.5·qmax for subnormal ones.
func testErrorBound(t *testing.T, b quant.Backend, seed uint64) {
	clamped, total := 0, 0
	for _, l := range propertyLayouts() {
		r := NewRand(seed, "ErrorBound "+name(l))
		w := Weights(r, l)
		scales, packed, deq := quantizeAll(t, b, w, l)
		qmax := float64(l.Precision.QMax())
		gpr := l.GroupsPerRow()
		for row := range l.Rows {
			for c := range l.Cols {
				i := row*l.Cols + c
				bits := scales[row*gpr+c/l.GroupSize]
				s := float64(quant.ScaleValue(bits))
				x := float64(w[i])
				q := codeAt(packed, l, row, c)
				if math.Float32bits(deq[i]) != math.Float32bits(quant.Decode(q, float32(s))) {
					t.Fatalf("%s: element %d: dequantized 0x%08x is not Decode(%d, %g)", name(l), i, math.Float32bits(deq[i]), q, s)
				}
				v := float64(float32(w[i] * quant.Reciprocal(bits)))
				rv := math.RoundToEven(v)
				err := math.Abs(x - float64(deq[i]))
				subnormal := bits < 0x0400
				total++
				if subnormal && math.Abs(v) >= 1.5*qmax || !subnormal && math.Abs(v) > qmax*(1+0x1p-11)*(1+0x1p-22) {
					t.Fatalf("%s: element %d = %g with scale %g (0x%04x): |v| = %g is out of bounds for qmax %g", name(l), i, x, s, bits, v, qmax)
				}
				if math.Abs(rv) <= qmax {
					if float64(q) != rv {
						t.Fatalf("%s: element %d = %g: code %d, want rint(%g) = %g", name(l), i, x, q, v, rv)
					}
					if bound := s/2 + math.Abs(x)*0x1p-22; err > bound {
						t.Fatalf("%s: element %d = %g with scale %g (0x%04x): |x − q·s| = %g exceeds s/2 + |x|·2^-22 = %g",
							name(l), i, x, s, bits, err, bound)
					}
					continue
				}
				clamped++
				if !subnormal {
					t.Fatalf("%s: element %d = %g: the clamp acted on a normal scale %g (0x%04x), v = %g", name(l), i, x, s, bits, v)
				}
				if float64(q) != math.Copysign(qmax, v) {
					t.Fatalf("%s: element %d = %g: code %d, want %g (clamped)", name(l), i, x, q, math.Copysign(qmax, v))
				}
				if bound := qmax*0x1p-25 + math.Abs(x)*0x1p-22; err > bound {
					t.Fatalf("%s: element %d = %g with scale %g (0x%04x): clamped error %g exceeds qmax·2^-25 + |x|·2^-22 = %g",
						name(l), i, x, s, bits, err, bound)
				}
			}
		}
	}
	t.Logf("%d elements, %d clamped (all on subnormal scales)", total, clamped)
	if clamped == 0 {
		t.Error("no element was clamped: the generator no longer covers subnormal scales")
	}
}

// testRequantize checks that quantizing the dequantized weights again
// gives the same scales and codes in every group whose scale is a normal
// binary16 number or zero: such a group always holds a code ±qmax, so its
// new absolute maximum is exactly qmax·s.
func testRequantize(t *testing.T, b quant.Backend, seed uint64) {
	for _, l := range propertyLayouts() {
		r := NewRand(seed, "Requantize "+name(l))
		w := Weights(r, l)
		scales, packed, deq := quantizeAll(t, b, w, l)
		scales2, packed2, _ := quantizeAll(t, b, deq, l)
		gpr := l.GroupsPerRow()
		for row := range l.Rows {
			for g := range gpr {
				s := scales[row*gpr+g]
				if s != 0 && s < 0x0400 {
					continue // subnormal scale: the maximum code may be below qmax
				}
				if s2 := scales2[row*gpr+g]; s2 != s {
					t.Fatalf("%s: row %d group %d: scale 0x%04x, requantized 0x%04x", name(l), row, g, s, s2)
				}
				lo, hi := l.Group(g)
				for c := lo; c < hi; c++ {
					if q, q2 := codeAt(packed, l, row, c), codeAt(packed2, l, row, c); q != q2 {
						t.Fatalf("%s: row %d col %d: code %d, requantized %d", name(l), row, c, q, q2)
					}
				}
			}
		}
	}
}

// testPackOrder pins the storage order with known codes on scale 1.
func testPackOrder(t *testing.T, b quant.Backend) {
	one := uint16(0x3c00)
	t.Run("INT8", func(t *testing.T) {
		l := quant.Layout{Rows: 1, Cols: 255, GroupSize: 255, Precision: quant.INT8}
		w := make([]float32, 255)
		want := make([]byte, 255)
		for i := range w {
			w[i] = float32(i - 127)
			want[i] = byte(int8(i - 127))
		}
		packed := make([]byte, 255)
		if err := b.Quantize(packed, w, []uint16{one}, l); err != nil {
			t.Fatal(err)
		}
		RequireEqualBits(t, "INT8 codes -127..127 are two's complement bytes", packed, want)
		// Every byte decodes to int8(byte).
		l = quant.Layout{Rows: 1, Cols: 256, GroupSize: 256, Precision: quant.INT8}
		all := make([]byte, 256)
		vals := make([]float32, 256)
		for i := range all {
			all[i] = byte(i)
			vals[i] = float32(int8(i))
		}
		got := make([]float32, 256)
		if err := b.Dequantize(got, all, []uint16{one}, l); err != nil {
			t.Fatal(err)
		}
		RequireEqualBits(t, "INT8 byte i decodes to int8(i)", got, vals)
	})
	t.Run("INT4", func(t *testing.T) {
		// Codes 0, 1, ..., 7, -7, ..., -1, then 3 (odd Cols: pad nibble 0).
		l := quant.Layout{Rows: 1, Cols: 17, GroupSize: 17, Precision: quant.INT4}
		w := []float32{0, 1, 2, 3, 4, 5, 6, 7, -7, -6, -5, -4, -3, -2, -1, 0, 3}
		want := []byte{0x10, 0x32, 0x54, 0x76, 0xa9, 0xcb, 0xed, 0x0f, 0x03}
		packed := make([]byte, l.PackedBytes())
		if err := b.Quantize(packed, w, []uint16{one}, l); err != nil {
			t.Fatal(err)
		}
		RequireEqualBits(t, "INT4: even column in the low nibble, pad nibble 0", packed, want)
		l = quant.Layout{Rows: 1, Cols: 512, GroupSize: 512, Precision: quant.INT4}
		all := make([]byte, 256)
		vals := make([]float32, 512)
		for i := range all {
			all[i] = byte(i)
			vals[2*i] = float32(int8(byte(i)<<4) >> 4)
			vals[2*i+1] = float32(int8(byte(i)) >> 4)
		}
		got := make([]float32, 512)
		if err := b.Dequantize(got, all, []uint16{one}, l); err != nil {
			t.Fatal(err)
		}
		RequireEqualBits(t, "INT4 byte i decodes to (low nibble, high nibble), sign-extended", got, vals)
	})
}

// testCode compares quant.Code with math.RoundToEven: exhaustively over
// every binary32 v with 2^-2 ≤ |v| < 2^22, the whole domain of Code's
// rounding trick above 1/4 (2^-1 ≤ |v| < 2^2 under -short), and every
// half-integer below 2^22 in magnitude; below 1/4 on chosen values; and on
// random (x, inv) pairs whose product lies inside the domain, with the
// clamps of INT8 and INT4.
func testCode(t *testing.T, seed uint64) {
	const wide = 1 << 30 // a qmax that never clamps
	check := func(v float32) {
		want := math.RoundToEven(float64(v))
		if got := quant.Code(v, 1, wide); float64(got) != want {
			t.Fatalf("Code(%g (0x%08x), 1) = %d, want %g", v, math.Float32bits(v), got, want)
		}
	}
	lo, hi := -2, 22
	if testing.Short() {
		lo, hi = -1, 2
	}
	for e := lo; e < hi; e++ {
		first := math.Float32bits(float32(math.Ldexp(1, e)))
		for m := range uint32(1 << 23) {
			v := math.Float32frombits(first + m)
			check(v)
			check(-v)
		}
	}
	t.Logf("Code agrees with RoundToEven on every binary32 with 2^%d ≤ |v| < 2^%d (%d values)", lo, hi, (hi-lo)<<24)
	step := 1
	if testing.Short() {
		step = 97
	}
	for k := -(1 << 22); k < 1<<22; k += step {
		check(float32(k) + 0.5)
	}
	// Zeros and values below one half round to zero.
	for _, v := range []float32{0, float32(math.Copysign(0, -1)), 0x1p-149, 0.25, 0.4999999, -0.5, 0.5} {
		check(v)
	}
	r := NewRand(seed, "Code")
	n := 2_000_000
	if testing.Short() {
		n = 100_000
	}
	for range n {
		x := math.Float32frombits(r.Uint32() & 0x7fffffff)
		if !quant.IsFinite(x) {
			continue
		}
		if r.IntN(2) == 0 {
			x = -x
		}
		bits := uint16(r.IntN(0x7bff) + 1)
		inv := quant.Reciprocal(bits)
		v := float32(x * inv)
		if math.Abs(float64(v)) >= 1<<22 {
			continue
		}
		for _, qmax := range []int32{127, 7} {
			want := max(-float64(qmax), min(float64(qmax), math.RoundToEven(float64(v))))
			if got := quant.Code(x, inv, qmax); float64(got) != want {
				t.Fatalf("Code(%g, %g, %d) = %d, want %g", x, inv, qmax, got, want)
			}
		}
	}
}

// f16Value is the binary64 value of positive finite binary16 bits.
func f16Value(b uint16) float64 {
	e, m := int(b>>10), float64(b&0x3ff)
	if e == 0 {
		return math.Ldexp(m, -24)
	}
	return math.Ldexp(1024+m, e-25)
}

// f16RNE rounds a non-negative v to binary16 bits, to nearest even,
// independently of the float16 package: 0x7c00 when it overflows.
func f16RNE(v float64) uint16 {
	lo, hi := uint16(0), uint16(0x7c00) // f16Value(lo) <= v < f16Value(hi)
	if v >= 65520 {
		return 0x7c00
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if f16Value(mid) <= v {
			lo = mid
		} else {
			hi = mid
		}
	}
	upper := 65536.0
	if hi < 0x7c00 {
		upper = f16Value(hi)
	}
	switch d, u := v-f16Value(lo), upper-v; {
	case d < u:
		return lo
	case d > u:
		return hi
	case lo%2 == 0:
		return lo
	}
	return hi
}

// refScaleBits is ScaleBits computed another way: binary64 division
// rounded to binary32 (the double rounding is innocuous for a quotient of
// 24-bit numbers), then f16RNE.
func refScaleBits(amax float32, p quant.Precision) (uint16, bool) {
	s32 := float32(float64(amax) / float64(p.QMax()))
	b := f16RNE(float64(s32))
	if b == 0 && amax > 0 {
		b = 1
	}
	return b, b != 0x7c00
}

func testScaleBits(t *testing.T, seed uint64) {
	check := func(amax float32, p quant.Precision) {
		gb, gok := quant.ScaleBits(amax, p)
		wb, wok := refScaleBits(amax, p)
		if gok != wok || (wok && gb != wb) {
			t.Fatalf("ScaleBits(%g (0x%08x), %s) = 0x%04x, %v; want 0x%04x, %v", amax, math.Float32bits(amax), p, gb, gok, wb, wok)
		}
	}
	for _, p := range precisions {
		qmax := float32(p.QMax())
		// Every rounding boundary of binary16: amax/qmax exactly on the
		// midpoint between two neighbours (a tie), and one binary32 ulp
		// either side of it.
		for b := range uint16(0x7c00) {
			mid := float32((f16Value(b) + f16Value(b) + math.Ldexp(1, max(int(b>>10), 1)-25)) / 2)
			a := mid * qmax
			check(a, p)
			check(math.Nextafter32(a, 0), p)
			check(math.Nextafter32(a, 1e38), p)
			check(float32(f16Value(b))*qmax, p)
		}
		r := NewRand(seed, "ScaleBits "+p.String())
		for range 200_000 {
			check(float32(math.Ldexp(r.Float64()+0.5, r.IntN(80)-50)), p)
		}
		// The limits: 65504·qmax fits, 65520·qmax (a tie, to even) overflows.
		ok, over := ScaleLimit(p)
		if over != 65520*qmax {
			t.Errorf("%s: the smallest overflowing absmax is %g, want 65520·%g", p, over, qmax)
		}
		for _, a := range []float32{ok, 65504 * qmax} {
			if b, fits := quant.ScaleBits(a, p); !fits || b != 0x7bff {
				t.Errorf("%s: ScaleBits(%g) = 0x%04x, %v; want 0x7bff, true", p, a, b, fits)
			}
		}
		// Underflow: a tiny absmax gets the smallest subnormal, zero gets zero.
		for _, a := range []float32{0x1p-149, 0x1p-126, float32(0x1p-25) * qmax} {
			if b, _ := quant.ScaleBits(a, p); b != 1 {
				t.Errorf("%s: ScaleBits(%g) = 0x%04x, want 0x0001", p, a, b)
			}
		}
		if b, fits := quant.ScaleBits(0, p); b != 0 || !fits {
			t.Errorf("%s: ScaleBits(0) = 0x%04x, %v", p, b, fits)
		}
	}
}

func testReciprocal(t *testing.T) {
	if quant.Reciprocal(0) != 0 {
		t.Fatal("Reciprocal(0) != 0")
	}
	for b := uint16(1); b < 0x7c00; b++ {
		want := float32(1 / f16Value(b))
		if got := quant.Reciprocal(b); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("Reciprocal(0x%04x) = %g, want %g", b, got, want)
		}
	}
}

// testDecode checks that Decode is exact for every code of both precisions
// (and -128) and every finite non-negative scale, and that a zero code gives +0.
func testDecode(t *testing.T) {
	for b := range uint16(0x7c00) {
		s := quant.ScaleValue(b)
		if float64(s) != f16Value(b) {
			t.Fatalf("ScaleValue(0x%04x) = %g, want %g", b, s, f16Value(b))
		}
		for q := int32(-128); q <= 127; q++ {
			got := quant.Decode(q, s)
			if float64(got) != float64(q)*f16Value(b) {
				t.Fatalf("Decode(%d, %g) = %g is not exact", q, s, got)
			}
			if q == 0 && math.Float32bits(got) != 0 {
				t.Fatalf("Decode(0, %g) = -0, want +0", s)
			}
		}
	}
}

func testNibbles(t *testing.T) {
	for q := int32(-8); q <= 7; q++ {
		if got := quant.UnpackNibble(quant.PackNibble(q)); got != q {
			t.Fatalf("UnpackNibble(PackNibble(%d)) = %d", q, got)
		}
		if quant.PackNibble(q) > 0x0f {
			t.Fatalf("PackNibble(%d) = 0x%02x has high bits", q, quant.PackNibble(q))
		}
	}
	for n := range 256 {
		got := quant.UnpackNibble(byte(n))
		want := int32(n & 0x0f)
		if want >= 8 {
			want -= 16
		}
		if got != want {
			t.Fatalf("UnpackNibble(0x%02x) = %d, want %d", n, got, want)
		}
		if quant.PackNibble(got) != byte(n&0x0f) {
			t.Fatalf("PackNibble(UnpackNibble(0x%02x)) = 0x%02x", n, quant.PackNibble(got))
		}
	}
}

// testMatMulAccuracy compares MatMul with the binary64 product of x and the
// dequantized weights. Each output is a sum of Cols products evaluated in a
// tree of depth at most GroupSize+2 (a group's chain, its product and the
// scale multiply) plus ceil(groups/32) (a lane) plus 5 (the fold), so its
// error is at most γ·Σ|x·q·s| with γ = depth·2^-24/(1 − depth·2^-24).
func testMatMulAccuracy(t *testing.T, b quant.Backend, seed uint64) {
	for _, l := range MatMulLayouts {
		for _, m := range []int{1, 5} {
			r := NewRand(seed, fmt.Sprintf("MatMulAccuracy m=%d %s", m, name(l)))
			w := Weights(r, l)
			x := Activations(r, m, l.Cols)
			scales, packed, deq := quantizeAll(t, b, w, l)
			y := make([]float32, m*l.Rows)
			if err := b.MatMul(y, x, m, packed, scales, l); err != nil {
				t.Fatal(err)
			}
			depth := float64(l.GroupSize + 2 + (l.GroupsPerRow()+31)/32 + 5)
			gamma := depth * 0x1p-24 / (1 - depth*0x1p-24)
			for i := range m {
				for n := range l.Rows {
					var exact, abs float64
					for k := range l.Cols {
						p := float64(x[i*l.Cols+k]) * float64(deq[n*l.Cols+k])
						exact += p
						abs += math.Abs(p)
					}
					got := float64(y[i*l.Rows+n])
					if bound := gamma*abs + depth*0x1p-149; math.Abs(got-exact) > bound {
						t.Fatalf("%s m=%d: y[%d][%d] = %g, binary64 %g: error %g exceeds %g",
							name(l), m, i, n, got, exact, math.Abs(got-exact), bound)
					}
				}
			}
		}
	}
}

// testStatsAccuracy compares ChannelStats, over several merged batches, with
// a two-pass binary64 mean and sum of squared deviations.
func testStatsAccuracy(t *testing.T, b quant.Backend, seed uint64) {
	for _, ch := range StatsChannels {
		r := NewRand(seed, fmt.Sprintf("ChannelStatsAccuracy %d", ch))
		s := quant.NewStats(ch)
		var all [][]float32
		for _, tokens := range StatsBatches {
			x := Activations(r, tokens, ch)
			if err := b.ChannelStats(s, x, tokens); err != nil {
				t.Fatal(err)
			}
			all = append(all, x)
		}
		n := 0
		for _, tk := range StatsBatches {
			n += tk
		}
		if s.Count != int64(n) {
			t.Fatalf("%d channels: Count %d, want %d", ch, s.Count, n)
		}
		for c := range ch {
			var sum float64
			var col []float64
			for _, x := range all {
				for tk := range len(x) / ch {
					col = append(col, float64(x[tk*ch+c]))
					sum += float64(x[tk*ch+c])
				}
			}
			mean := sum / float64(n)
			var m2, dev float64
			for _, v := range col {
				m2 += (v - mean) * (v - mean)
				dev = max(dev, math.Abs(v-mean))
			}
			// Welford's and Chan's updates lose about n roundings of the
			// mean's size in d, times the deviations they multiply.
			u := 0x1p-53 * float64(32*n)
			if tol := u * (math.Abs(mean) + dev); math.Abs(s.Mean[c]-mean) > tol+1e-300 {
				t.Fatalf("%d channels: mean[%d] = %g, two-pass %g (tolerance %g)", ch, c, s.Mean[c], mean, tol)
			}
			if tol := u * (m2 + float64(n)*(math.Abs(mean)+dev)*dev); math.Abs(s.M2[c]-m2) > tol+1e-300 {
				t.Fatalf("%d channels: M2[%d] = %g, two-pass %g (tolerance %g)", ch, c, s.M2[c], m2, tol)
			}
		}
	}
}
