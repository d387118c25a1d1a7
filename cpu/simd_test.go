package cpu_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/quant/quanttest"
	"github.com/x448/float16"
)

// TestMain says which path QuantizeGroups and Dequantize take on the
// default backend, since the same tests pass on either.
func TestMain(m *testing.M) {
	if cpu.New(1).SIMD() {
		fmt.Printf("cpu: QuantizeGroups and Dequantize use the %s kernels (the Generic tests run plain Go)\n", cpu.SIMDName)
	} else {
		fmt.Println("cpu: no vector kernels in this build or on this CPU: QuantizeGroups and Dequantize run plain Go only")
	}
	os.Exit(m.Run())
}

// requireSIMD skips a test of the vector kernels where they cannot run.
func requireSIMD(t *testing.T) *cpu.Backend {
	t.Helper()
	b := cpu.New(1)
	if !b.SIMD() {
		t.Skipf("no vector kernels (build tags, architecture or CPU): only the plain-Go path exists here")
	}
	return b
}

// sameQuantizeGroups fails t unless the vector and the plain-Go
// QuantizeGroups of b agree on w: the same error, and the same scales and
// codes when there is none.
func sameQuantizeGroups(t testing.TB, b *cpu.Backend, what string, w []float32, l quant.Layout) {
	t.Helper()
	what = fmt.Sprintf("%s: %s g%d %dx%d", what, l.Precision, l.GroupSize, l.Rows, l.Cols)
	gotS, wantS := make([]uint16, l.NumScales()), make([]uint16, l.NumScales())
	gotP, wantP := make([]byte, l.PackedBytes()), make([]byte, l.PackedBytes())
	gerr := b.QuantizeGroups(gotP, gotS, w, l)
	werr := b.Generic().QuantizeGroups(wantP, wantS, w, l)
	quanttest.RequireSameError(t, what, gerr, werr)
	if werr == nil {
		quanttest.RequireEqualBits(t, what+": scales", gotS, wantS)
		quanttest.RequireEqualBits(t, what+": packed", gotP, wantP)
	}
}

// TestQuantizeGroupsSIMD aims at the vector kernels: every group size that
// is a multiple of 8 up to 264 (the 32-float loop, the 8-float tail and
// both together), rows of several kernel rounds with a ragged end, and a
// non-finite value at every position of small tensors.
func TestQuantizeGroupsSIMD(t *testing.T) {
	b := requireSIMD(t)
	seed := quanttest.Seed(t)
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		for gs := 8; gs <= 264; gs += 8 {
			for _, cols := range []int{gs, 3*gs + 5, 2048 + gs, 2*2048 + 3} {
				l := quant.Layout{Rows: 3, Cols: cols, GroupSize: gs, Precision: p}
				r := quanttest.NewRand(seed, fmt.Sprintf("SIMD %s g%d c%d", p, gs, cols))
				w := quanttest.Weights(r, l)
				sameQuantizeGroups(t, b, "weights", w, l)
			}
		}
		for _, gs := range []int{8, 16, 40} {
			l := quant.Layout{Rows: 2, Cols: 2*gs + 3, GroupSize: gs, Precision: p}
			r := quanttest.NewRand(seed, fmt.Sprintf("SIMD non-finite %s g%d", p, gs))
			w := quanttest.Weights(r, l)
			for i := range w {
				for _, bad := range []uint32{0x7f800000, 0xff800001, 0x7fc00000} {
					v := slices.Clone(w)
					v[i] = math.Float32frombits(bad)
					v[len(v)-1-i] = 3e38 // an overflow, before or after it
					sameQuantizeGroups(t, b, fmt.Sprintf("0x%08x at %d", bad, i), v, l)
				}
			}
		}
	}
}

// TestDequantizeSIMD compares the vector and plain-Go Dequantize of b on
// every group size that is a multiple of 8 up to 264, on random codes (all
// byte values: -128, -8 and junk pad nibbles included) with scales of every
// bit pattern: zero, subnormal, normal, negative, ±Inf and NaN.
func TestDequantizeSIMD(t *testing.T) {
	b := requireSIMD(t)
	r := quanttest.NewRand(quanttest.Seed(t), "DequantizeSIMD")
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		for gs := 8; gs <= 264; gs += 8 {
			for _, cols := range []int{gs, 3*gs + 5, 2048 + gs, 2*2048 + 3} {
				l := quant.Layout{Rows: 3, Cols: cols, GroupSize: gs, Precision: p}
				packed := quanttest.Codes(r, l)
				scales := make([]uint16, l.NumScales())
				for i := range scales {
					scales[i] = uint16(r.Uint32())
				}
				what := fmt.Sprintf("%s g%d %dx%d", p, gs, l.Rows, l.Cols)
				got, want := make([]float32, l.Elements()), make([]float32, l.Elements())
				if err := b.Dequantize(got, packed, scales, l); err != nil {
					t.Fatal(err)
				}
				if err := b.Generic().Dequantize(want, packed, scales, l); err != nil {
					t.Fatal(err)
				}
				quanttest.RequireEqualBits(t, what+": w", got, want)
			}
		}
	}
}

// scaleBits is quant.ScaleBits for any qmax, written the same way.
func scaleBits(amax, qmax float32) uint16 {
	bits := uint16(float16.Fromfloat32(float32(amax / qmax)))
	if bits == 0 && amax > 0 {
		bits = 1
	}
	return bits
}

// TestScalesSIMD checks the scale kernel against quant.ScaleBits and
// quant.Reciprocal. With qmax = 1 its binary16 conversion (VCVTPS2PH)
// sees amax itself, so the sweep of every binary32 from 2^-26 to 2^17
// compares it with float16.Fromfloat32 wherever the result is neither 0
// (then the zero fix applies) nor +Inf; -short takes every 61st value.
// Random values of every magnitude, the boundaries, and the real qmax of
// INT8 and INT4 follow.
func TestScalesSIMD(t *testing.T) {
	requireSIMD(t)
	var recip [1 << 16]float32
	for b := range recip {
		recip[b] = quant.Reciprocal(uint16(b))
	}
	const chunk = 1 << 12
	m := make([]uint32, chunk)
	bits := make([]uint16, chunk)
	inv := make([]float32, chunk)
	check := func(ms []uint32, qmax float32, ref func(float32) uint16) {
		t.Helper()
		for len(ms) > 0 {
			n := min(len(ms), chunk)
			copy(m, ms[:n])
			clear(m[n:])
			ms = ms[n:]
			cpu.ScalesSIMD(bits, inv, m, qmax)
			for k, u := range m[:n] {
				amax := math.Float32frombits(u)
				want := ref(amax)
				if bits[k] != want || math.Float32bits(inv[k]) != math.Float32bits(recip[want]) {
					t.Fatalf("qmax %g, amax %g (0x%08x): kernel scale 0x%04x inv 0x%08x, want 0x%04x inv 0x%08x",
						qmax, amax, u, bits[k], math.Float32bits(inv[k]), want, math.Float32bits(recip[want]))
				}
			}
		}
	}
	one := func(amax float32) uint16 { return scaleBits(amax, 1) }
	step := uint32(1)
	if testing.Short() {
		step = 61
	}
	lo, hi := math.Float32bits(0x1p-26), math.Float32bits(0x1p17)
	sweep := make([]uint32, 0, chunk)
	for u := lo; u < hi; u += step {
		sweep = append(sweep, u)
		if len(sweep) == chunk {
			check(sweep, 1, one)
			sweep = sweep[:0]
		}
	}
	check(sweep, 1, one)

	r := quanttest.NewRand(quanttest.Seed(t), "ScalesSIMD")
	special := []uint32{0, 1, 2, 0x007fffff, 0x00800000, lo - 1, lo, hi - 1, hi, 0x7f7fffff}
	for range 1 << 16 {
		special = append(special, r.Uint32N(0x7f800000))
	}
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		qmax := float32(p.QMax())
		ms := slices.Clone(special)
		ok, over := quanttest.ScaleLimit(p)
		for _, a := range []float32{ok, over, qmax * 0x1p-25, qmax * 0x1p-24, qmax * 0x1p-14, qmax * 65504} {
			for d := range uint32(5) {
				ms = append(ms, math.Float32bits(a)+d-2)
			}
		}
		check(ms, qmax, func(amax float32) uint16 {
			bits, _ := quant.ScaleBits(amax, p)
			if mine := scaleBits(amax, qmax); mine != bits {
				t.Fatalf("scaleBits(%g, %g) = 0x%04x, quant.ScaleBits 0x%04x", amax, qmax, mine, bits)
			}
			return bits
		})
		check(ms, 1, one)
	}
}

// FuzzQuantizeGroups compares the vector and plain-Go QuantizeGroups, and
// GroupScales followed by Quantize, on arbitrary bit patterns: every
// 4 bytes of data are one float32, in rows of cols (1 to 64) elements.
func FuzzQuantizeGroups(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 1, 0, 0, 0, 0, 0, 0, 0x80}, uint8(8), uint8(3), false)
	f.Add(make([]byte, 4*48), uint8(16), uint8(47), true)
	f.Add(slices.Repeat([]byte{0xab, 0xcd, 0x12, 0x45}, 100), uint8(24), uint8(40), false)
	f.Add(slices.Repeat([]byte{0x00, 0x00, 0x80, 0x7f}, 33), uint8(8), uint8(32), true)
	f.Fuzz(func(t *testing.T, data []byte, gsel, csel uint8, int4 bool) {
		cols := int(csel)%64 + 1
		n := len(data) / 4 / cols * cols
		if n == 0 {
			return
		}
		w := make([]float32, n)
		for i := range w {
			w[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		l := quant.Layout{Rows: n / cols, Cols: cols, GroupSize: []int{8, 16, 24, 32, 7, 1}[int(gsel)%6], Precision: quant.INT8}
		if int4 {
			l.Precision = quant.INT4
		}
		b := cpu.New(1)
		sameQuantizeGroups(t, b, "fuzz", w, l)
		wantS, wantP := make([]uint16, l.NumScales()), make([]byte, l.PackedBytes())
		werr := b.GroupScales(wantS, w, l)
		if werr == nil {
			if err := b.Quantize(wantP, w, wantS, l); err != nil {
				t.Fatal(err)
			}
		}
		gotS, gotP := make([]uint16, l.NumScales()), make([]byte, l.PackedBytes())
		gerr := b.QuantizeGroups(gotP, gotS, w, l)
		quanttest.RequireSameError(t, "fuzz against GroupScales+Quantize", gerr, werr)
		if werr == nil {
			quanttest.RequireEqualBits(t, "fuzz: scales", gotS, wantS)
			quanttest.RequireEqualBits(t, "fuzz: packed", gotP, wantP)
		}
	})
}
