package gptq

import (
	"context"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

// denseUpperInverseFactor is the dense implementation the packed one
// replaced (every matrix K×K row-major, column by column Cholesky, column
// by column inverse), kept here as the reference for its bits.
func denseUpperInverseFactor(a []float64, k int) ([]float64, bool) {
	for j := range k {
		rj := a[j*k : j*k+j]
		d := a[j*k+j]
		for _, v := range rj {
			d -= float64(v * v)
		}
		if !(d > 0) || !isFinite(d) {
			return nil, false
		}
		ljj := math.Sqrt(d)
		a[j*k+j] = ljj
		for i := j + 1; i < k; i++ {
			ri := a[i*k : i*k+j][:len(rj)]
			s := a[i*k+j]
			for m, v := range ri {
				s -= float64(v * rj[m])
			}
			a[i*k+j] = s / ljj
		}
	}
	x := make([]float64, k*k)
	for c := range k {
		col := x[c*k : (c+1)*k]
		col[c] = 1 / a[c*k+c]
		for i := c + 1; i < k; i++ {
			li := a[i*k+c : i*k+i]
			xs := col[c:i][:len(li)]
			var s float64
			for m, v := range li {
				s += float64(v * xs[m])
			}
			col[i] = -s / a[i*k+i]
		}
	}
	u := make([]float64, k*k)
	for i := range k {
		for j := i; j < k; j++ {
			u[i*k+j] = x[(k-1-j)*k+(k-1-i)]
		}
	}
	return u, true
}

// The packed, blocked and tiled factorisation gives the dense one's U bit
// for bit, at sizes that leave partial blocks and tiles, with 1 and 3
// goroutines.
func TestPackedFactorMatchesDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, k := range []int{2, 5, 8, 37, 300} {
		x := correlated(rng, 2*k+3, k)
		h, _ := momentOf(t, x, 2*k+3, k)
		const lam = 0.01
		var mean float64
		for i := range k {
			mean += h[i*k+i]
		}
		mean /= float64(k)
		hd := make([]float64, k*k)
		for i := range k {
			for j := range k {
				hd[(k-1-i)*k+(k-1-j)] = h[i*k+j]
			}
			hd[(k-1-i)*k+(k-1-i)] += lam * mean
		}
		want, ok := denseUpperInverseFactor(hd, k)
		require.True(t, ok)
		for _, workers := range []int{1, 3} {
			s, err := SymFromDense(h, k)
			require.NoError(t, err)
			f, err := NewFactor(context.Background(), s, int64(2*k+3), Options{Damp: lam, Workers: workers})
			require.NoError(t, err)
			for i := range k {
				for j := i; j < k; j++ {
					got := f.u[uOff(i, k)+j-i]
					if math.Float64bits(got) != math.Float64bits(want[i*k+j]) {
						t.Fatalf("k=%d workers=%d: U(%d, %d) = %v, dense %v", k, workers, i, j, got, want[i*k+j])
					}
				}
			}
		}
	}
}

// TakeMean converts the moment in place to the values Mean gives, and
// leaves the moment empty.
func TestTakeMeanEqualsMean(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	const k, tokens = 41, 150
	x := correlated(rng, tokens, k)
	m := NewMoment(k)
	require.NoError(t, m.Add(x, tokens, 2))
	dense := m.Mean()
	s := m.TakeMean()
	require.Equal(t, k, s.K())
	for i := range k {
		for j := range k {
			require.Equal(t, math.Float64bits(dense[i*k+j]), math.Float64bits(s.At(i, j)), "(%d, %d)", i, j)
		}
	}
	assert.Len(t, s.spare, len(s.Packed()), "the low words become the factorisation's storage")
	assert.Equal(t, int64(tokens), m.Tokens())
	require.Error(t, m.Add(x, tokens, 1), "a taken moment cannot accumulate")
	assert.Equal(t, dense, s.Dense())
	// An empty moment gives zeros.
	z := NewMoment(3).TakeMean()
	assert.Equal(t, make([]float64, 9), z.Dense())
}

// The dense entry points refuse an H that is not symmetric (the packed
// storage keeps one triangle).
func TestSymFromDenseRefusesAsymmetry(t *testing.T) {
	h := []float64{1, 2, 3, 4}
	_, err := SymFromDense(h, 2)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not symmetric")
	h[1] = math.NaN()
	_, err = SymFromDense(h, 2)
	assert.ErrorContains(t, err, "non-finite")
}

// The factorisation of a large H stops with its context, and reports its
// work as it goes: a canceled context after the first report stops it
// before the end.
func TestFactorStopsWithContext(t *testing.T) {
	const k = 600
	s := NewSym(k)
	for i := range k {
		s.data[tri(i)+i] = 1 + float64(i%7)
		if i > 0 {
			s.data[tri(i)+i-1] = 0.3
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var units atomic.Int64
	_, err := NewFactor(ctx, s, 10*k, Options{Progress: func(n int64) {
		if units.Add(n) > 0 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, units.Load(), FactorWork(k)/2, "stopped within a block of columns")
}

// Progress adds up to the announced work of a whole run (factor and rows).
func TestProgressAddsUp(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	const rows, k = 21, 96
	x := correlated(rng, 300, k)
	h, _ := momentOf(t, x, 300, k)
	w := randomWeights(rng, rows*k)
	l := quant.Layout{Rows: rows, Cols: k, GroupSize: 32, Precision: quant.INT4}
	for _, search := range []bool{false, true} {
		var units atomic.Int64
		_, err := Quantize(w, l, h, 300, Options{Search: search, Workers: 2, Progress: func(n int64) { units.Add(n) }})
		require.NoError(t, err)
		want := FactorWork(k) + RowWork(l, search)
		assert.InEpsilon(t, float64(want), float64(units.Load()), 0.05, "search=%v", search)
	}
}
