package checkpoint

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/safetensors"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// requireBits compares float32 slices bit for bit (so NaN payloads and the
// sign of zero count) and reports the first difference.
func requireBits(t testing.TB, want, got []float32) {
	t.Helper()
	require.Equal(t, len(want), len(got))
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("element %d: want %v (%#08x), got %v (%#08x)", i,
				want[i], math.Float32bits(want[i]), got[i], math.Float32bits(got[i]))
		}
	}
}

// allHalfBits is every 16-bit pattern once, little-endian, followed by a
// short ragged tail, so a conversion is checked on every value and on a
// length that is not a multiple of any unrolling.
func allHalfBits() []byte {
	b := make([]byte, 0, 2*(1<<16+3))
	for h := range 1 << 16 {
		b = binary.LittleEndian.AppendUint16(b, uint16(h))
	}
	return binary.LittleEndian.AppendUint16(append(b, 0x00, 0x3c), 0x7e01) // 1.0, a NaN
}

// convertFile writes tensors of each float dtype, aligned and not, and
// opens the checkpoint.
func convertFile(t *testing.T, half, f32 []byte) *Checkpoint {
	path := filepath.Join(t.TempDir(), SingleName)
	specs := []safetensors.Spec{
		{Name: "f16", DType: safetensors.F16, Shape: []int64{int64(len(half) / 2)}},
		{Name: "bf16", DType: safetensors.BF16, Shape: []int64{int64(len(half) / 2)}},
		{Name: "f32", DType: safetensors.F32, Shape: []int64{int64(len(f32) / 4)}},
		{Name: "odd.offset", DType: safetensors.U8, Shape: []int64{1}},
		// These three start at odd offsets, so the in-place fast path
		// must step aside.
		{Name: "f16.odd", DType: safetensors.F16, Shape: []int64{int64(len(half) / 2)}},
		{Name: "bf16.odd", DType: safetensors.BF16, Shape: []int64{int64(len(half) / 2)}},
		{Name: "f32.odd", DType: safetensors.F32, Shape: []int64{int64(len(f32) / 4)}},
	}
	w, err := safetensors.Create(path, specs, nil)
	require.NoError(t, err)
	require.NoError(t, w.Write("f16", half))
	require.NoError(t, w.Write("bf16", half))
	require.NoError(t, w.Write("f32", f32))
	require.NoError(t, w.Write("odd.offset", []byte{7}))
	require.NoError(t, w.Write("f16.odd", half))
	require.NoError(t, w.Write("bf16.odd", half))
	require.NoError(t, w.Write("f32.odd", f32))
	require.NoError(t, w.Close())
	c, err := Open(path, Options{AllowedDTypes: []safetensors.DType{safetensors.F16, safetensors.BF16, safetensors.F32, safetensors.U8}})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFloat32Conversions(t *testing.T) {
	t.Run("native", testFloat32Conversions)
	t.Run("portable", func(t *testing.T) {
		// The byte-assembling loops used on big-endian hosts and for
		// misaligned data.
		saved := hostLittleEndian
		defer func() { hostLittleEndian = saved }()
		hostLittleEndian = false
		testFloat32Conversions(t)
	})
}

func testFloat32Conversions(t *testing.T) {
	half := allHalfBits()
	r := rand.New(rand.NewPCG(7, 7))
	var f32 []byte
	var wantF32 []float32
	for i := range 1001 {
		bits := r.Uint32()
		switch i {
		case 0:
			bits = 0x7fa00001 // signalling NaN: must come through untouched
		case 1:
			bits = 0x80000000 // -0
		}
		f32 = binary.LittleEndian.AppendUint32(f32, bits)
		wantF32 = append(wantF32, math.Float32frombits(bits))
	}
	c := convertFile(t, half, f32)

	n := len(half) / 2
	wantF16 := make([]float32, n)
	wantBF16 := make([]float32, n)
	for i := range n {
		h := binary.LittleEndian.Uint16(half[2*i:])
		wantF16[i] = float16.Frombits(h).Float32()
		wantBF16[i] = math.Float32frombits(uint32(h) << 16)
	}
	for name, want := range map[string][]float32{
		"f16": wantF16, "bf16": wantBF16, "f32": wantF32,
		"f16.odd": wantF16, "bf16.odd": wantBF16, "f32.odd": wantF32,
	} {
		t.Run(name, func(t *testing.T) {
			tn, ok := c.Lookup(name)
			require.True(t, ok)
			// Guard values around the destination catch writes out of range.
			buf := make([]float32, len(want)+2)
			buf[0], buf[len(buf)-1] = -12345, 54321
			require.NoError(t, tn.Float32(buf[1:len(buf)-1]))
			requireBits(t, want, buf[1:len(buf)-1])
			require.Equal(t, float32(-12345), buf[0])
			require.Equal(t, float32(54321), buf[len(buf)-1])

			require.ErrorContains(t, tn.Float32(make([]float32, len(want)-1)),
				"Float32 destination has")
			require.ErrorContains(t, tn.Float32(make([]float32, len(want)+1)),
				"Float32 destination has")
		})
	}
}

func BenchmarkFloat32(b *testing.B) {
	const n = 1 << 20
	src := make([]byte, 4*n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range src {
		src[i] = byte(r.Uint32())
	}
	dst := make([]float32, n)
	dstBytes := make([]byte, 4*n)
	for _, bc := range []struct {
		name  string
		bytes int
		fn    func()
	}{
		{"memcpy", 4 * n, func() { copy(dstBytes, src) }}, // the floor for F32
		{"F32", 4 * n, func() { f32FromLE(dst, src) }},
		{"BF16", 2 * n, func() { bf16FromLE(dst, src) }},
		{"F16", 2 * n, func() { f16FromLE(dst, src) }},
		{"F16-naive", 2 * n, func() {
			for i := range dst {
				dst[i] = float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32()
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(bc.bytes))
			b.ReportAllocs()
			for b.Loop() {
				bc.fn()
			}
		})
	}
}

func TestDecodeFloat32Errors(t *testing.T) {
	require.EqualError(t, DecodeFloat32(make([]float32, 2), make([]byte, 2), safetensors.I8),
		"cannot convert dtype I8 to F32 (supported: F32, F16, BF16)")
	require.EqualError(t, DecodeFloat32(make([]float32, 2), make([]byte, 6), safetensors.F16),
		"6 bytes of F16 do not hold 2 elements")
	require.NoError(t, DecodeFloat32(nil, nil, safetensors.F32))
	require.NoError(t, DecodeFloat32(nil, nil, safetensors.BF16))
	require.NoError(t, DecodeFloat32(nil, nil, safetensors.F16))
}

func TestEncodeFloat32Errors(t *testing.T) {
	require.EqualError(t, EncodeFloat32(make([]byte, 2), make([]float32, 2), safetensors.I8),
		"cannot convert F32 to dtype I8 (supported: F32, F16, BF16)")
	require.EqualError(t, EncodeFloat32(make([]byte, 3), make([]float32, 2), safetensors.F16),
		"3 bytes of F16 do not hold 2 elements")
	require.NoError(t, EncodeFloat32(nil, nil, safetensors.F32))

	// Overflow is reported at the first offending index; infinities and
	// NaNs that were already there are not overflows.
	inf := float32(math.Inf(1))
	require.EqualError(t, EncodeFloat32(make([]byte, 8), []float32{65519, -65520, inf, 1}, safetensors.F16),
		"value -65520 at index 1 overflows F16 (max 65504)")
	require.NoError(t, EncodeFloat32(make([]byte, 8), []float32{65519, -inf, float32(math.NaN()), 1}, safetensors.F16))
	require.EqualError(t, EncodeFloat32(make([]byte, 4), []float32{-inf, math.MaxFloat32}, safetensors.BF16),
		"value 3.4028235e+38 at index 1 overflows BF16")
	require.NoError(t, EncodeFloat32(make([]byte, 4), []float32{math.Float32frombits(0x7f7f7fff), inf}, safetensors.BF16),
		"the largest value that rounds down stays finite")
}

// TestHalfRoundTrip: every F16 and BF16 value survives decode then encode
// unchanged; NaNs stay NaN.
func TestHalfRoundTrip(t *testing.T) {
	half := allHalfBits()
	n := len(half) / 2
	for _, dt := range []safetensors.DType{safetensors.F16, safetensors.BF16} {
		f := make([]float32, n)
		require.NoError(t, DecodeFloat32(f, half, dt))
		back := make([]byte, len(half))
		require.NoError(t, EncodeFloat32(back, f, dt))
		for i := range n {
			in, out := binary.LittleEndian.Uint16(half[2*i:]), binary.LittleEndian.Uint16(back[2*i:])
			if math.IsNaN(float64(f[i])) {
				require.True(t, isHalfNaN(out, dt), "%s %#04x: NaN came back as %#04x", dt, in, out)
				continue
			}
			require.Equal(t, in, out, "%s %#04x", dt, in)
		}
	}
}

func isHalfNaN(h uint16, dt safetensors.DType) bool {
	if dt == safetensors.F16 {
		return h&0x7c00 == 0x7c00 && h&0x3ff != 0
	}
	return h&0x7f80 == 0x7f80 && h&0x7f != 0
}

// bf16Reference rounds to nearest even by comparing distances in float64,
// where both neighbours and x are exact.
func bf16Reference(x float32) uint16 {
	b := math.Float32bits(x)
	lo := b &^ 0xffff
	hi := lo + 0x10000 // next bfloat16 away from zero
	dl := math.Abs(float64(x) - float64(math.Float32frombits(lo)))
	dh := math.Abs(float64(math.Float32frombits(hi)) - float64(x))
	if hi&0x7fffffff == 0x7f800000 { // the neighbour above is infinity
		dh = math.Abs(0x1p128 - math.Abs(float64(x)))
	}
	switch {
	case dl < dh, dl == dh && (lo>>16)&1 == 0:
		return uint16(lo >> 16)
	}
	return uint16(hi >> 16)
}

func TestEncodeRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	src := []float32{
		math.Float32frombits(0x3f808000),                   // BF16 tie, even below
		math.Float32frombits(0x3f818000),                   // BF16 tie, odd below: rounds up
		math.Float32frombits(0x3f808001),                   // just above a tie
		math.Float32frombits(0x00008000),                   // subnormal tie
		math.Float32frombits(0x80018000),                   // negative subnormal tie
		math.Float32frombits(0x7f7f7fff),                   // largest that stays finite in BF16
		math.MaxFloat32, -math.Float32frombits(0x7f7f8000), // overflow BF16
		0, float32(math.Copysign(0, -1)),
		65504, 65519.99, 5.96e-8, 2.98e-8, 2.99e-8, // F16 edges
	}
	for range 200000 {
		switch x := math.Float32frombits(r.Uint32()); {
		case math.IsNaN(float64(x)) || math.IsInf(float64(x), 0):
		default:
			src = append(src, x, float32(r.NormFloat64()*100))
		}
	}
	one := make([]byte, 4)
	for _, x := range src {
		require.NoError(t, EncodeFloat32(one[:4], []float32{x}, safetensors.F32))
		require.Equal(t, math.Float32bits(x), binary.LittleEndian.Uint32(one), "F32 of %g", x)

		if math.Abs(float64(x)) < 65520 {
			require.NoError(t, EncodeFloat32(one[:2], []float32{x}, safetensors.F16))
			require.Equal(t, float16.Fromfloat32(x).Bits(), binary.LittleEndian.Uint16(one), "F16 of %g", x)
		} else {
			require.Error(t, EncodeFloat32(one[:2], []float32{x}, safetensors.F16), "F16 of %g", x)
		}

		want := bf16Reference(x)
		err := EncodeFloat32(one[:2], []float32{x}, safetensors.BF16)
		if want&0x7fff == 0x7f80 {
			require.Error(t, err, "BF16 of %g overflows", x)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, want, binary.LittleEndian.Uint16(one), "BF16 of %g (%#08x)", x, math.Float32bits(x))
	}

	// The F32 fast path and the portable loop agree on a whole slice.
	fast := make([]byte, 4*len(src))
	require.NoError(t, EncodeFloat32(fast, src, safetensors.F32))
	saved := hostLittleEndian
	defer func() { hostLittleEndian = saved }()
	hostLittleEndian = false
	portable := make([]byte, 4*len(src))
	require.NoError(t, EncodeFloat32(portable, src, safetensors.F32))
	require.Equal(t, fast, portable)
}

// TestDecodeSizes runs every length around the unrolled block of eight, on
// both paths and at an even and an odd address, against per-element
// references, with guard values around the destination.
func TestDecodeSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 4*40+1)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	ref := map[safetensors.DType]func(b []byte) float32{
		safetensors.F32:  func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) },
		safetensors.F16:  func(b []byte) float32 { return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32() },
		safetensors.BF16: func(b []byte) float32 { return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16) },
	}
	saved := hostLittleEndian
	defer func() { hostLittleEndian = saved }()
	for _, native := range []bool{true, false} {
		hostLittleEndian = native && saved
		for dt, conv := range ref {
			sz := dt.Size()
			for _, off := range []int{0, 1} {
				for n := range 34 {
					src := buf[off : off+n*sz]
					want := make([]float32, n)
					for i := range want {
						want[i] = conv(src[i*sz:])
					}
					got := make([]float32, n+2)
					got[0], got[n+1] = 7, 9
					require.NoError(t, DecodeFloat32(got[1:n+1], src, dt))
					requireBits(t, want, got[1:n+1])
					require.Equal(t, float32(7), got[0])
					require.Equal(t, float32(9), got[n+1])
				}
			}
		}
	}
}

// Blocks large enough to be cut over goroutines decode exactly as the
// sequential loops do, for every dtype and for lengths that do not divide
// evenly.
func TestDecodeFloat32Parallel(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16} {
		n := 4*decodeGrain + 37
		raw := make([]byte, n*dt.Size())
		for i := range raw {
			raw[i] = byte(i*131 + i>>8)
		}
		got := make([]float32, n)
		require.NoError(t, DecodeFloat32(got, raw, dt))
		want := make([]float32, n)
		switch dt {
		case safetensors.F32:
			f32FromLE(want, raw)
		case safetensors.F16:
			f16FromLE(want, raw)
		case safetensors.BF16:
			bf16FromLE(want, raw)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: element %d: %08x, want %08x", dt, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
			}
		}
	}
}
