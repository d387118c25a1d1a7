package synth

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/safetensors"
)

// requireSameBits fails at the first element whose bits differ, with both
// values.
func requireSameBits(t *testing.T, want, got []float32, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s: first difference at index %d: want %v (%#08x), got %v (%#08x)",
				msg, i, want[i], math.Float32bits(want[i]), got[i], math.Float32bits(got[i]))
		}
	}
}

func fnvBits(x []float32) uint64 {
	h := fnv.New64a()
	_ = binary.Write(h, binary.LittleEndian, x)
	return h.Sum64()
}

func TestFillDeterministic(t *testing.T) {
	const n = 4099
	a, b := make([]float32, n), make([]float32, n)
	Fill(a, "w", 7, 0)
	Fill(b, "w", 7, 0)
	requireSameBits(t, a, b, "same seed and name")

	Fill(b, "w", 8, 0)
	assert.NotEqual(t, fnvBits(a), fnvBits(b), "another seed must give other values")
	Fill(b, "w2", 7, 0)
	assert.NotEqual(t, fnvBits(a), fnvBits(b), "another name must give other values")
	Fill(b, "w", 7, 1)
	requireSameBits(t, a[1:], b[:n-1], "offset 1 is a shift by one element")
}

// TestFillChunks checks that any chunking gives the elements of one call,
// for the draw and for every role of FillTensor, with split points around
// the 64-element rows of the matrix.
func TestFillChunks(t *testing.T) {
	specs := []safetensors.Spec{
		{Name: "draw"}, // Fill itself
		{Name: "model.layers.0.mlp.down_proj.weight", Shape: []int64{50, 64}},
		{Name: "model.embed_tokens.weight", Shape: []int64{50, 64}},
		{Name: "model.norm.weight", Shape: []int64{3200}},
	}
	const n = 3200
	gen := func(dst []float32, s safetensors.Spec, off int64) {
		if s.Name == "draw" {
			Fill(dst, s.Name, 3, off)
		} else {
			FillTensor(dst, s, 3, off)
		}
	}
	for _, s := range specs {
		t.Run(s.Name, func(t *testing.T) {
			whole := make([]float32, n)
			gen(whole, s, 0)
			for _, split := range []int{0, 1, 63, 64, 65, 127, 128, 129, n / 2, n - 1, n} {
				parts := make([]float32, n)
				gen(parts[:split], s, 0)
				gen(parts[split:], s, int64(split))
				requireSameBits(t, whole, parts, "two halves")
			}
			// Random chunks, generated in reverse order on goroutines.
			rng := rand.New(rand.NewPCG(1, 2))
			cuts := []int{0, n}
			for range 20 {
				cuts = append(cuts, rng.IntN(n))
			}
			slices.Sort(cuts)
			parts := make([]float32, n)
			var wg sync.WaitGroup
			for i := len(cuts) - 2; i >= 0; i-- {
				lo, hi := cuts[i], cuts[i+1]
				wg.Go(func() { gen(parts[lo:hi], s, int64(lo)) })
			}
			wg.Wait()
			requireSameBits(t, whole, parts, "random chunks")
		})
	}
}

// TestFillGolden pins the generator: a change here changes every
// checkpoint and must come with a new GeneratorVersion.
func TestFillGolden(t *testing.T) {
	const name = "model.layers.0.self_attn.q_proj.weight"
	x := make([]float32, 1<<16)
	Fill(x, name, 42, 0)
	assert.Equal(t, []float32{-1.1165586, -0.6492207, 0.15003198, 0.70667976}, x[:4])
	assert.Equal(t, uint64(0x961472c38a876d7f), fnvBits(x), "Fill(%q, 42)", name)
	FillTensor(x, safetensors.Spec{Name: name, Shape: []int64{256, 256}}, 42, 0)
	assert.Equal(t, uint64(0x4b914eedc4f9b42c), fnvBits(x), "FillTensor(%q [256 256], 42)", name)
	assert.Equal(t, 1, GeneratorVersion)
}

// TestT4Tail checks the inverse tail against published Student-t(4)
// quantiles: P(|T| > t) = g.
func TestT4Tail(t *testing.T) {
	for _, c := range []struct{ g, t float64 }{
		{1, 0},
		{0.5, 0.740697},  // 75th percentile
		{0.2, 1.533206},  // 90th
		{0.1, 2.131847},  // 95th
		{0.05, 2.776445}, // 97.5th
		{0.01, 4.604095}, // 99.5th
		{0.002, 7.173182},
	} {
		assert.InDelta(t, c.t, t4Tail(c.g), 2e-6, "g = %v", c.g)
	}
	// Deep in the tail the quantile follows t ≈ (6/g)^(1/4).
	g := 1e-12
	assert.InEpsilon(t, math.Pow(6/g, 0.25), t4Tail(g), 1e-3)
}

// refElement is element i of the draw with key, computed the slow way:
// the octave by counting leading zeros, the segment and position by
// shifts, and the quantile both from the table (interp) and exactly.
func refElement(key, i uint64) (interp, exact float64) {
	h := mix64(key + i*golden)
	k := (h>>16)&(1<<47-1)<<1 | 1 // g·2⁴⁸, 48 bits
	g := float64(k) * 0x1p-48
	exact = min(t4Tail(g)/math.Sqrt2, clampT)
	interp = clampT
	if e := bits.LeadingZeros64(k) - 16; e < octaves {
		m := k << (16 + e + 1) // the bits after the leading one, at the top
		s := int(m >> 58)
		lo := math.Ldexp(1+float64(s)/segments, -(e + 1))
		hi := math.Ldexp(1+float64(s+1)/segments, -(e + 1))
		f := (g - lo) / (hi - lo)
		sg := quantiles()[e*segments+segments-1-s]
		interp = float64(sg.delta*f) + sg.base
	}
	if int64(h) < 0 {
		interp, exact = -interp, -exact
	}
	if h&0xFFFF < outlierBelow {
		interp, exact = outlier(interp, h), outlier(exact, h)
	}
	return interp, exact
}

// TestFillReference compares Fill with the slow reference bit for bit,
// and with the exact Student-t(4) quantile to the interpolation error.
func TestFillReference(t *testing.T) {
	const n = 1 << 18
	x := make([]float32, n)
	Fill(x, "ref", 4, 1000)
	key := tensorKey(4, "ref")
	worst := 0.0
	for i, v := range x {
		interp, exact := refElement(key, uint64(1000+i))
		if math.Float32bits(v) != math.Float32bits(float32(interp)) {
			t.Fatalf("element %d: Fill gives %v, the reference %v", i, v, float32(interp))
		}
		if math.Abs(exact) > 0.01 {
			worst = max(worst, math.Abs(interp-exact)/math.Abs(exact))
		}
	}
	t.Logf("worst relative error of the interpolated quantile: %.2g", worst)
	assert.Less(t, worst, 1e-4)
}

// TestQuantileTable checks that the table is continuous and monotonic:
// entries run from g = 1 down, so the quantile grows.
func TestQuantileTable(t *testing.T) {
	q := quantiles()
	assert.Equal(t, 0.0, q[0].base+q[0].delta, "the quantile at g = 1 is 0")
	for k := 1; k < len(q); k++ {
		assert.LessOrEqual(t, q[k].delta, 0.0, "entry %d", k)
		assert.Equal(t, q[k-1].base, q[k].base+q[k].delta, "entry %d must start where %d ends", k, k-1)
	}
	assert.Equal(t, float64(clampT), q[len(q)-1].base, "the deepest octave is clamped")
}

func TestFillDistribution(t *testing.T) {
	const n = 1 << 22
	x := make([]float32, n)
	Fill(x, "dist", 11, 0)
	var m1, m2, m4 float64
	over5, over32 := 0, 0
	for i, v := range x {
		f := float64(v)
		if !(math.Abs(f) < 1600) { // also catches NaN and ±Inf
			t.Fatalf("index %d is %v, want finite and below 1600 in magnitude", i, v)
		}
		m1 += f
		m2 += f * f
		m4 += f * f * f * f
		if math.Abs(f) > 5 {
			over5++
		}
		if math.Abs(f) > 32 {
			over32++
		}
	}
	m1 /= n
	m2 /= n
	m4 /= n
	kurt := m4 / (m2 * m2)
	t.Logf("mean %.4f variance %.3f kurtosis %.0f; |x|>5: %d, |x|>32: %d", m1, m2, kurt, over5, over32)
	assert.InDelta(t, 0, m1, 0.01)
	assert.InDelta(t, 1.2, m2, 0.15, "unit variance plus the outliers' share")
	assert.Greater(t, kurt, 50.0, "heavy tails and outliers")

	// The t(4) tail beyond 5σ: P(|T| > 5√2).
	tt := 5 * math.Sqrt2
	y := tt / math.Sqrt(tt*tt+4)
	want := (1 - y) * (1 - y) * (2 + y) / 2 * n
	assert.InDelta(t, want, float64(over5), 6*math.Sqrt(want)+7.0/65536*n, "|x| > 5")

	// The outliers are exactly the elements whose low hash bits are < 7.
	key := tensorKey(11, "dist")
	outliers := 0
	for i, v := range x {
		if mix64(key+uint64(i)*golden)&0xFFFF < outlierBelow {
			outliers++
			if math.Abs(float64(v)) < 10 {
				t.Errorf("outlier at %d is %v, want at least 10 in magnitude", i, v)
			}
		}
	}
	expect := float64(n) * outlierBelow / 65536
	t.Logf("%d outliers, %.0f expected", outliers, expect)
	assert.InDelta(t, expect, float64(outliers), 5*math.Sqrt(expect))
	assert.Greater(t, over32, outliers/2, "most outliers exceed the clamp of ordinary values")
}

func TestFillNegativeOffset(t *testing.T) {
	assert.Panics(t, func() { Fill(make([]float32, 1), "x", 0, -1) })
	assert.Panics(t, func() { FillTensor(make([]float32, 1), safetensors.Spec{Name: "x"}, 0, -1) })
}

func TestRoleOf(t *testing.T) {
	for _, c := range []struct {
		name  string
		shape []int64
		want  Role
	}{
		{"model.embed_tokens.weight", []int64{256, 64}, Embedding},
		{"lm_head.weight", []int64{256, 64}, Matrix},
		{"model.norm.weight", []int64{64}, Norm},
		{"model.layers.3.input_layernorm.weight", []int64{64}, Norm},
		{"model.layers.3.block_sparse_moe.gate.weight", []int64{4, 64}, Matrix},
		{"model.layers.3.block_sparse_moe.experts.1.w2.weight", []int64{64, 128}, Matrix},
		{"scalar", nil, Norm},
	} {
		got := RoleOf(safetensors.Spec{Name: c.name, Shape: c.shape})
		assert.Equal(t, c.want, got, c.name)
		assert.NotEqual(t, "role(?)", got.String())
	}
}

func TestChannels(t *testing.T) {
	for _, c := range []struct {
		cols int64
		want int
	}{{1, 1}, {2, 2}, {64, 2}, {1024, 2}, {2048, 4}, {4096, 8}, {11008, 8}} {
		s := safetensors.Spec{Name: "m", Shape: []int64{3, c.cols}}
		ch := Channels(s, 5)
		require.Len(t, ch, c.want, "fan_in %d", c.cols)
		seen := map[int64]bool{}
		for _, k := range ch {
			assert.False(t, seen[k.Column], "column %d repeats", k.Column)
			seen[k.Column] = true
			assert.True(t, k.Column >= 0 && k.Column < c.cols)
			assert.True(t, k.Scale >= 4 && k.Scale < 8, "scale %v", k.Scale)
		}
	}
	assert.Empty(t, Channels(safetensors.Spec{Name: "model.norm.weight", Shape: []int64{64}}, 5))
	assert.Empty(t, Channels(safetensors.Spec{Name: "model.embed_tokens.weight", Shape: []int64{9, 64}}, 5))
}

// TestFillTensorReference checks FillTensor against its documented formula,
// computed the slow way from Fill.
func TestFillTensorReference(t *testing.T) {
	const seed = 9
	for _, s := range []safetensors.Spec{
		{Name: "model.layers.1.self_attn.k_proj.weight", Shape: []int64{32, 64}},
		{Name: "model.layers.1.mlp.down_proj.weight", Shape: []int64{16, 172}},
		{Name: "model.embed_tokens.weight", Shape: []int64{40, 64}},
		{Name: "model.layers.1.post_attention_layernorm.weight", Shape: []int64{2000}},
	} {
		n := numel(&s)
		x := make([]float32, n)
		Fill(x, s.Name, seed, 0)
		want := make([]float32, n)
		scale := map[int64]float32{}
		for _, c := range Channels(s, seed) {
			scale[c.Column] = c.Scale
		}
		for i, v := range x {
			switch RoleOf(s) {
			case Norm:
				want[i] = float32(1 + 0.02*min(max(float64(v), -5), 5))
				assert.InDelta(t, 1, want[i], 0.1+1e-6)
			case Embedding:
				want[i] = float32(0.02 * float64(v))
			case Matrix:
				cols := s.Shape[len(s.Shape)-1]
				y := v
				if c, ok := scale[int64(i)%cols]; ok {
					y = float32(float64(v) * float64(c))
				}
				want[i] = float32(float64(y) / math.Sqrt(float64(cols)))
			}
		}
		got := make([]float32, n)
		FillTensor(got, s, seed, 0)
		requireSameBits(t, want, got, s.Name)
	}
}

// TestChannelsStandOut checks that the outlier columns of a matrix have a
// visibly larger spread than the others.
func TestChannelsStandOut(t *testing.T) {
	s := safetensors.Spec{Name: "model.layers.0.mlp.up_proj.weight", Shape: []int64{2048, 256}}
	w := make([]float32, numel(&s))
	FillTensor(w, s, 1, 0)
	cols := int(s.Shape[1])
	meanAbs := make([]float64, cols)
	for i, v := range w {
		meanAbs[i%cols] += math.Abs(float64(v))
	}
	ch := Channels(s, 1)
	special := map[int]bool{}
	for _, c := range ch {
		special[int(c.Column)] = true
	}
	var ordinary float64
	for c, m := range meanAbs {
		if !special[c] {
			ordinary += m / float64(cols-len(ch))
		}
	}
	for _, c := range ch {
		ratio := meanAbs[c.Column] / ordinary
		assert.InDelta(t, float64(c.Scale), ratio, 0.15*float64(c.Scale), "column %d", c.Column)
	}
	// The ordinary columns are scaled by 1/sqrt(fan_in): E|t4/√2| = 1/√2.
	assert.InDelta(t, 1/math.Sqrt2/16, ordinary/2048, 0.1/16)
}

func TestBFloat16(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3F800000, 0x3F80}, // 1
		{0x3F808000, 0x3F80}, // tie, even below
		{0x3F818000, 0x3F82}, // tie, odd below: up
		{0x3F808001, 0x3F81}, // above the tie
		{0x3F807FFF, 0x3F80}, // below the tie
		{0xBF818000, 0xBF82}, // negative tie
		{0x7F7FFFFF, 0x7F80}, // the largest float32 rounds to infinity
		{0x00000001, 0x0000}, // smallest subnormal
		{0x80000000, 0x8000}, // -0
		{0x7F800000, 0x7F80}, // +Inf
	} {
		assert.Equal(t, c.want, bfloat16(math.Float32frombits(c.in)), "%#08x", c.in)
	}
	// Against a reference: the nearer of the two neighbours, ties to even.
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200000 {
		b := rng.Uint32()
		if b&0x7F800000 == 0x7F800000 {
			continue // NaN and Inf
		}
		lo := b &^ 0xFFFF
		hi := lo + 0x10000
		x := float64(math.Float32frombits(b))
		dlo := math.Abs(x - float64(math.Float32frombits(lo)))
		var dhi float64
		if hi&0x7F800000 == 0x7F800000 { // rounding up reaches infinity
			dhi = math.Abs(x) - math.Ldexp(1, 128) // distance to 2^128, as IEEE rounding measures it
			dhi = -dhi
		} else {
			dhi = math.Abs(x - float64(math.Float32frombits(hi)))
		}
		want := lo
		if dhi < dlo || (dhi == dlo && (lo>>16)&1 == 1) {
			want = hi
		}
		require.Equal(t, uint16(want>>16), bfloat16(math.Float32frombits(b)), "%#08x", b)
	}
}

func TestEncode(t *testing.T) {
	src := []float32{1, -2, 0.5, 65504}
	f32 := make([]byte, 16)
	encode(f32, src, safetensors.F32)
	assert.Equal(t, []byte{0, 0, 0x80, 0x3F}, f32[:4])
	f16 := make([]byte, 8)
	encode(f16, src, safetensors.F16)
	assert.Equal(t, []byte{0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38, 0xFF, 0x7B}, f16)
	bf := make([]byte, 8)
	encode(bf, src, safetensors.BF16)
	assert.Equal(t, []byte{0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F, 0x80, 0x47}, bf)
	assert.Panics(t, func() { encode(bf, src, safetensors.I8) })
}
