package gptq

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// correlated returns tokens×k activations with correlated channels (a
// random mixing of independent sources, some channels much larger), the
// situation in which error feedback has something to compensate.
func correlated(rng *rand.Rand, tokens, k int) []float32 {
	src := k / 2
	mix := make([]float64, src*k)
	for i := range mix {
		mix[i] = rng.NormFloat64()
	}
	x := make([]float32, tokens*k)
	z := make([]float64, src)
	for t := range tokens {
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for c := range k {
			var s float64
			for i, v := range z {
				s += v * mix[i*k+c]
			}
			if c%7 == 0 {
				s *= 4 // outlier channels
			}
			x[t*k+c] = float32(s)
		}
	}
	return x
}

func randomWeights(rng *rand.Rand, n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.05)
	}
	return w
}

func momentOf(t *testing.T, x []float32, tokens, k int) ([]float64, *Moment) {
	t.Helper()
	m := NewMoment(k)
	require.NoError(t, m.Add(x, tokens, 2))
	return m.Mean(), m
}

// proxy is tr((W−Ŵ) H (W−Ŵ)ᵀ) computed here independently of the package
// (plain full double sum).
func proxy(w, q []float32, h []float64, rows, k int) float64 {
	var total float64
	d := make([]float64, k)
	for r := range rows {
		for j := range d {
			d[j] = float64(w[r*k+j]) - float64(q[r*k+j])
		}
		for i := range k {
			for j := range k {
				total += d[i] * h[i*k+j] * d[j]
			}
		}
	}
	return total
}

// rtn is absmax round-to-nearest through the CPU backend, dequantized.
func rtn(t *testing.T, w []float32, l quant.Layout) []float32 {
	t.Helper()
	be := cpu.New(1)
	packed, scales := make([]byte, l.PackedBytes()), make([]uint16, l.NumScales())
	require.NoError(t, quant.QuantizeGroups(be, packed, scales, w, l))
	out := make([]float32, len(w))
	require.NoError(t, be.Dequantize(out, packed, scales, l))
	return out
}

// requireValid checks that res is exactly what the format can hold: the
// backend's Quantize of res.W with res.Scales dequantizes back to res.W.
func requireValid(t *testing.T, res *Result, l quant.Layout) {
	t.Helper()
	be := cpu.New(1)
	packed := make([]byte, l.PackedBytes())
	require.NoError(t, be.Quantize(packed, res.W, res.Scales, l))
	back := make([]float32, len(res.W))
	require.NoError(t, be.Dequantize(back, packed, res.Scales, l))
	for i := range back {
		if math.Float32bits(back[i]) != math.Float32bits(res.W[i]) && !(back[i] == 0 && res.W[i] == 0) {
			t.Fatalf("element %d: stored %v, GPTQ chose %v", i, back[i], res.W[i])
		}
	}
}

func TestGPTQNeverAboveRTNOnRandomProblems(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		rows, k, g, tokens int
		p                  quant.Precision
		search             bool
	}{
		{16, 64, 32, 512, quant.INT4, false},
		{16, 64, 32, 512, quant.INT4, true},
		{9, 96, 128, 400, quant.INT4, false}, // one ragged group per row
		{8, 130, 32, 300, quant.INT4, true},  // ragged tail group
		{8, 64, 16, 256, quant.INT8, false},
		{5, 200, 64, 150, quant.INT4, false}, // fewer tokens than channels
	} {
		x := correlated(rng, c.tokens, c.k)
		h, _ := momentOf(t, x, c.tokens, c.k)
		w := randomWeights(rng, c.rows*c.k)
		l := quant.Layout{Rows: c.rows, Cols: c.k, GroupSize: c.g, Precision: c.p}
		res, err := Quantize(w, l, h, int64(c.tokens), Options{Search: c.search})
		require.NoError(t, err)
		requireValid(t, res, l)
		got, base := proxy(w, res.W, h, c.rows, c.k), proxy(w, rtn(t, w, l), h, c.rows, c.k)
		t.Logf("%+v: proxy loss %.4g vs RTN %.4g (%.2f), rows per method %v", c, got, base, got/base, res.Rows)
		assert.LessOrEqual(t, got, base, "%+v: GPTQ proxy loss above round to nearest", c)
		assert.InDelta(t, base, res.LossRTN, 1e-9*base+1e-300, "%+v: the reported RTN loss", c)
		assert.InDelta(t, got, res.Loss, 1e-9*got+1e-300, "%+v: the reported loss", c)
		if c.p == quant.INT4 {
			// Error feedback must actually help on correlated inputs, not only
			// fall back to rounding.
			assert.Less(t, got, 0.8*base, "%+v: GPTQ %g vs RTN %g", c, got, base)
			assert.Greater(t, res.Rows[GPTQ], c.rows/2, "%+v: rows per method %v", c, res.Rows)
		}
	}
}

func TestGPTQDeterministicAcrossWorkersAndBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, k, tokens = 13, 160, 300
	x := correlated(rng, tokens, k)
	h, _ := momentOf(t, x, tokens, k)
	w := randomWeights(rng, rows*k)
	for _, g := range []int{16, 32, 50, 160, 256} {
		l := quant.Layout{Rows: rows, Cols: k, GroupSize: g, Precision: quant.INT4}
		ref, err := Quantize(w, l, h, tokens, Options{Workers: 1, BlockSize: 1, Search: true})
		require.NoError(t, err)
		for _, o := range []Options{{Workers: 2}, {Workers: 3, BlockSize: 7}, {Workers: 8, BlockSize: 64}, {BlockSize: 500}} {
			o.Search = true
			for _, procs := range []int{1, 2} {
				old := runtime.GOMAXPROCS(procs)
				res, err := Quantize(w, l, h, tokens, o)
				runtime.GOMAXPROCS(old)
				require.NoError(t, err)
				require.Equal(t, ref.Scales, res.Scales, "g=%d %+v GOMAXPROCS=%d", g, o, procs)
				for i := range ref.W {
					if math.Float32bits(ref.W[i]) != math.Float32bits(res.W[i]) {
						t.Fatalf("g=%d %+v GOMAXPROCS=%d: element %d: %v, unblocked single worker %v", g, o, procs, i, res.W[i], ref.W[i])
					}
				}
				require.Equal(t, math.Float64bits(ref.Loss), math.Float64bits(res.Loss))
			}
		}
	}
}

func TestBlocksStartEveryGroup(t *testing.T) {
	for _, c := range []struct{ k, g, bs int }{{300, 32, 128}, {300, 50, 128}, {300, 200, 128}, {300, 256, 64}, {17, 4, 1}, {128, 128, 128}} {
		ends := blocks(c.k, c.g, c.bs)
		starts := map[int]bool{0: true}
		prev := 0
		for _, e := range ends {
			assert.Greater(t, e, prev)
			assert.LessOrEqual(t, e-prev, max(c.bs, c.g*(c.bs/max(1, c.g))))
			starts[e] = true
			prev = e
		}
		assert.Equal(t, c.k, prev)
		// At a group's first column every column of the group must have
		// received all earlier updates: the group starts a block, or lies
		// inside one (whose updates are applied at once).
		for s := 0; s < c.k; s += c.g {
			e := min(c.k, s+c.g)
			inside := false
			b0 := 0
			for _, b1 := range ends {
				inside = inside || (b0 <= s && e <= b1)
				b0 = b1
			}
			assert.True(t, starts[s] || inside, "%+v: group [%d, %d) straddles blocks %v", c, s, e, ends)
		}
	}
}

func TestDegenerateHessianIsDampedNeverNaN(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, k = 6, 64
	w := randomWeights(rng, rows*k)
	l := quant.Layout{Rows: rows, Cols: k, GroupSize: 32, Precision: quant.INT4}
	dead := correlated(rng, 100, k)
	for tok := range 100 {
		for c := 10; c < 20; c++ {
			dead[tok*k+c] = 0 // channels 10..19 never fire
		}
	}
	cases := map[string]struct {
		x      []float32
		tokens int
		notice string
	}{
		"dead channels": {dead, 100, "never active"},
		"one token":     {correlated(rng, 1, k), 1, "only 1 calibration tokens"},
		"no tokens":     {nil, 0, "no input channel active"},
		"all zero":      {make([]float32, 10*k), 10, "no input channel active"},
	}
	for name, c := range cases {
		h, _ := momentOf(t, c.x, c.tokens, k)
		res, err := Quantize(w, l, h, int64(c.tokens), Options{Search: true})
		require.NoError(t, err, name)
		requireValid(t, res, l)
		for i, v := range res.W {
			require.True(t, quant.IsFinite(v), "%s: element %d is %v", name, i, v)
		}
		assert.Contains(t, joined(res.Notices), c.notice, name)
		assert.LessOrEqual(t, proxy(w, res.W, h, rows, k), proxy(w, rtn(t, w, l), h, rows, k), name)
	}
	// A matrix that is not positive semi-definite at all is retried with
	// more damping, then falls back to H = I, still finite.
	bad := make([]float64, k*k)
	for i := range k {
		bad[i*k+i] = 1
		if i+1 < k {
			bad[i*k+i+1], bad[(i+1)*k+i] = 5, 5
		}
	}
	res, err := Quantize(w, l, bad, 1000, Options{})
	require.NoError(t, err)
	requireValid(t, res, l)
	assert.Contains(t, joined(res.Notices), "damping ×10")
}

func joined(s []string) string {
	out := ""
	for _, v := range s {
		out += v + "\n"
	}
	return out
}

func TestQuantizeRejectsNonFiniteWeights(t *testing.T) {
	l := quant.Layout{Rows: 2, Cols: 8, GroupSize: 4, Precision: quant.INT4}
	w := make([]float32, 16)
	w[11] = float32(math.NaN())
	h := make([]float64, 64)
	_, err := Quantize(w, l, h, 0, Options{})
	var nf *quant.NonFiniteError
	require.ErrorAs(t, err, &nf)
	assert.Equal(t, 11, nf.Index)
}

func TestMomentMergeEqualsOnePass(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const k = 37
	for _, c := range []struct{ tokens, cut int }{{200, 128}, {130, 64}, {64, 64}, {65, 0}} {
		x := correlated(rng, c.tokens, k)
		one := NewMoment(k)
		require.NoError(t, one.Add(x, c.tokens, 1))
		a, b := NewMoment(k), NewMoment(k)
		require.NoError(t, a.Add(x[:c.cut*k], c.cut, 3))
		require.NoError(t, b.Add(x[c.cut*k:], c.tokens-c.cut, 2))
		require.NoError(t, a.Merge(b))
		assert.True(t, one.Equal(a), "%+v: merged halves differ from one pass", c)
		// The other merge order gives the same bits too.
		a2, b2 := NewMoment(k), NewMoment(k)
		require.NoError(t, a2.Add(x[:c.cut*k], c.cut, 1))
		require.NoError(t, b2.Add(x[c.cut*k:], c.tokens-c.cut, 1))
		require.NoError(t, b2.Merge(a2))
		assert.True(t, one.Equal(b2), "%+v: merge order changed the bits", c)
		// And the mean is E[x xᵀ] to binary64 accuracy.
		mean := one.Mean()
		for i := range k {
			for j := range k {
				var s float64
				for tok := range c.tokens {
					s += float64(x[tok*k+i]) * float64(x[tok*k+j])
				}
				s /= float64(c.tokens)
				require.InDelta(t, s, mean[i*k+j], 1e-12*(math.Abs(s)+1), "entry (%d, %d)", i, j)
			}
		}
	}
}

func TestMomentRejectsNonFiniteActivations(t *testing.T) {
	m := NewMoment(4)
	x := []float32{1, 2, 3, 4, 5, float32(math.Inf(1)), 7, 8}
	err := m.Add(x, 2, 1)
	var nf *NonFiniteActivationError
	require.ErrorAs(t, err, &nf)
	assert.Equal(t, 1, nf.Token)
	assert.Equal(t, 1, nf.Channel)
	assert.Zero(t, m.Tokens(), "a rejected batch must leave the moment unchanged")
	require.Error(t, m.Add([]float32{1e30, 0, 0, 0}, 1, 1), "overflowing activations")
	assert.Zero(t, m.Tokens())
}

func TestFixedPointRoundTrip(t *testing.T) {
	for _, v := range []float64{0, 1, -1, 0.5, -3.25, 1e-20, -1e-19, 1 << 39, -(1 << 39) + 0.125, 123456.789} {
		h, l := toFixed(v)
		got := fromFixed(int64(h), l)
		assert.InDelta(t, v, got, math.Abs(v)*1e-15+0x1p-64, "%g", v)
	}
}

func TestSearchNeverIncreasesItsObjective(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	better := 0
	for trial := range 400 {
		n := 1 + rng.IntN(128)
		x := make([]float32, n)
		d := make([]float64, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(6)-4)))
			if trial%5 == 0 && i == 0 {
				x[i] *= 20 // an outlier, where clipping pays
			}
			d[i] = rng.ExpFloat64()
		}
		for _, p := range []quant.Precision{quant.INT4, quant.INT8} {
			for _, w := range [][]float64{nil, d} {
				abs, ok := quant.ScaleBits(AbsMax(x), p)
				require.True(t, ok)
				s, ok := SearchScale(x, w, p)
				require.True(t, ok)
				qmax := int32(p.QMax())
				es, ea := GroupError(x, w, s, qmax), GroupError(x, w, abs, qmax)
				require.LessOrEqual(t, es, ea, "trial %d %v: searched %#04x, absmax %#04x", trial, p, s, abs)
				if es < ea {
					better++
				}
			}
		}
	}
	assert.Greater(t, better, 400, "the search should usually find a better scale than absmax")
	// An all-zero group keeps the zero scale.
	s, ok := SearchScale(make([]float32, 8), nil, quant.INT4)
	assert.True(t, ok)
	assert.Zero(t, s)
}

func TestSearchScalesErrors(t *testing.T) {
	l := quant.Layout{Rows: 2, Cols: 6, GroupSize: 4, Precision: quant.INT8}
	w := make([]float32, 12)
	w[7] = float32(math.NaN())
	err := SearchScales(make([]uint16, l.NumScales()), w, nil, l)
	var nf *quant.NonFiniteError
	require.ErrorAs(t, err, &nf)
	assert.Equal(t, 7, nf.Index)
	w[7] = 0
	w[9] = 1e7 // 1e7/127 overflows F16
	err = SearchScales(make([]uint16, l.NumScales()), w, nil, l)
	var so *quant.ScaleOverflowError
	require.ErrorAs(t, err, &so)
	assert.Equal(t, 1, so.Row)
	assert.Equal(t, 0, so.Group)
}

// The tiled loop (rows interleaved so that U and H are read once per
// tile) gives the reference's bits: each row receives the same operations.
func TestTileMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, c := range []struct {
		rows, k, g int
		p          quant.Precision
		search     bool
	}{
		{17, 96, 32, quant.INT4, true}, {9, 130, 64, quant.INT4, false}, {8, 40, 7, quant.INT8, true}, {3, 200, 256, quant.INT4, true},
	} {
		x := correlated(rng, 300, c.k)
		h, _ := momentOf(t, x, 300, c.k)
		w := randomWeights(rng, c.rows*c.k)
		l := quant.Layout{Rows: c.rows, Cols: c.k, GroupSize: c.g, Precision: c.p}
		ref, err := Quantize(w, l, h, 300, Options{Search: c.search, reference: true, Workers: 1})
		require.NoError(t, err)
		for _, workers := range []int{1, 2, 3} {
			got, err := Quantize(w, l, h, 300, Options{Search: c.search, Workers: workers})
			require.NoError(t, err)
			require.Equal(t, ref.Scales, got.Scales, "%+v workers=%d", c, workers)
			for i := range ref.W {
				if math.Float32bits(ref.W[i]) != math.Float32bits(got.W[i]) {
					t.Fatalf("%+v workers=%d: element %d: tiled %v, reference %v", c, workers, i, got.W[i], ref.W[i])
				}
			}
			require.Equal(t, math.Float64bits(ref.Loss), math.Float64bits(got.Loss), "%+v", c)
			require.Equal(t, math.Float64bits(ref.LossRTN), math.Float64bits(got.LossRTN), "%+v", c)
			require.Equal(t, ref.Rows, got.Rows, "%+v", c)
		}
	}
	// An overflowing scale names the same (first) row either way.
	l := quant.Layout{Rows: 12, Cols: 16, GroupSize: 8, Precision: quant.INT8}
	w := randomWeights(rng, 12*16)
	w[9*16+3], w[5*16+12] = 1e7, -2e7
	h := make([]float64, 16*16)
	for i := range 16 {
		h[i*16+i] = 1
	}
	for _, o := range []Options{{reference: true}, {Workers: 1}, {Workers: 2}} {
		_, err := Quantize(w, l, h, 100, o)
		var so *quant.ScaleOverflowError
		require.ErrorAs(t, err, &so, "%+v", o)
		assert.Equal(t, 5, so.Row, "%+v", o)
		assert.Equal(t, 1, so.Group, "%+v", o)
	}
}
