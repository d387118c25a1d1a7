package importance

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
)

// fakeAnalysis has one 4×8 matrix per score, named m00, m01, …, plus a norm
// vector, with every candidate feasible.
func fakeAnalysis(scores ...float64) *Analysis {
	a := &Analysis{GroupSize: 4, Backend: "test", Weights: DefaultWeights()}
	for i, s := range scores {
		t := &TensorScore{Name: fmt.Sprintf("m%02d", i), Shape: []int64{4, 8}, Matrix: true, Score: s}
		for _, p := range Candidates {
			t.Candidates = append(t.Candidates, Candidate{Precision: p, Feasible: true, Bytes: dataBytes(p, 4, 8, 4)})
		}
		a.Tensors = append(a.Tensors, t)
	}
	a.Tensors = append(a.Tensors, &TensorScore{Name: "norm.weight", Shape: []int64{8}})
	a.index()
	order := a.Matrices()
	sortByImportance(order)
	for i, t := range order {
		t.Rank = i + 1
	}
	return a
}

// ranks returns n descending distinct scores.
func ranks(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = 1 - float64(i)/float64(n+1)
	}
	return s
}

// precisions decides every matrix and returns their precisions by name order.
func precisions(t *testing.T, a *Analysis, p Policy) []string {
	t.Helper()
	var out []string
	for _, m := range a.Matrices() {
		d := p.Decide(policy.Tensor{Name: m.Name, Shape: m.Shape})
		require.False(t, d.Keep, m.Name)
		out = append(out, d.Precision.String())
	}
	return out
}

func TestCounts(t *testing.T) {
	cases := []struct {
		n          int
		high, low  float64
		nHigh, nLo int
	}{
		{10, 0.2, 0.4, 2, 4},
		{36, 0.2, 0.4, 7, 14},
		{1, 0.2, 0.4, 0, 0},
		{2, 0.2, 0.4, 0, 1},
		{3, 0.2, 0.4, 1, 1},
		{5, 0.2, 0.4, 1, 2},
		{0, 0.2, 0.4, 0, 0},
		{10, 0, 0.4, 0, 4},
		{10, 0.2, 0, 2, 0},
		{10, 0.3, 0.7, 3, 7},
		{3, 0.5, 0.5, 2, 1}, // rounding overflows: low gives way
		{4, 1, 0, 4, 0},
		{4, 0, 1, 0, 4},
	}
	for _, c := range cases {
		h, l := Counts(c.n, c.high, c.low)
		assert.Equal(t, [2]int{c.nHigh, c.nLo}, [2]int{h, l}, "n=%d high=%v low=%v", c.n, c.high, c.low)
		assert.LessOrEqual(t, h+l, c.n)
	}
}

func TestDynamic(t *testing.T) {
	f16, i8, i4 := "f16", "int8", "int4"
	cases := []struct {
		name      string
		scores    []float64
		high, low float64
		want      []string
	}{
		{"n=10", ranks(10), 0.2, 0.4, []string{f16, f16, i8, i8, i8, i8, i4, i4, i4, i4}},
		{"n=1", ranks(1), 0.2, 0.4, []string{i8}},
		{"n=2", ranks(2), 0.2, 0.4, []string{i8, i4}},
		{"n=3", ranks(3), 0.2, 0.4, []string{f16, i8, i4}},
		{"order follows score, not name", []float64{0.1, 0.9, 0.5}, 0.2, 0.4, []string{i4, f16, i8}},
		{"ties broken by name", []float64{0.5, 0.5, 0.5, 0.5, 0.5}, 0.2, 0.4, []string{f16, i8, i8, i4, i4}},
		{"tie across a boundary", []float64{0.9, 0.5, 0.5, 0.1, 0.1}, 0.4, 0.2, []string{f16, f16, i8, i8, i4}},
		{"high=0", ranks(10), 0, 0.4, []string{i8, i8, i8, i8, i8, i8, i4, i4, i4, i4}},
		{"low=0", ranks(10), 0.2, 0, []string{f16, f16, i8, i8, i8, i8, i8, i8, i8, i8}},
		{"high+low=1", ranks(10), 0.3, 0.7, []string{f16, f16, f16, i4, i4, i4, i4, i4, i4, i4}},
		{"high+low=1 rounding", ranks(3), 0.5, 0.5, []string{f16, f16, i4}},
		{"all high", ranks(3), 1, 0, []string{f16, f16, f16}},
		{"n=0", nil, 0.2, 0.4, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := fakeAnalysis(c.scores...)
			d, err := NewDynamic(a, nil, c.high, c.low)
			require.NoError(t, err)
			assert.Equal(t, c.want, precisions(t, a, d))
			assert.Equal(t, len(c.scores), d.N)
			assert.Equal(t, d.N, d.NHigh+d.NMid+d.NLow)
			nd := d.Decide(policy.Tensor{Name: "norm.weight", Shape: []int64{8}})
			assert.True(t, nd.Keep)
		})
	}
}

func TestDynamicInvalidShares(t *testing.T) {
	a := fakeAnalysis(ranks(4)...)
	for _, c := range [][2]float64{{-0.1, 0.4}, {0.2, -0.1}, {1.1, 0}, {0, 1.1}, {0.6, 0.5}, {math.NaN(), 0.4}, {0.2, math.Inf(1)}} {
		_, err := NewDynamic(a, nil, c[0], c[1])
		assert.ErrorIs(t, err, quant.ErrInput, "%v", c)
	}
}

func TestDynamicPins(t *testing.T) {
	a := fakeAnalysis(ranks(10)...)
	r1, err := policy.ParseRule(`^m00$=int4`)
	require.NoError(t, err)
	r2, err := policy.ParseRule(`^m09$=f32`)
	require.NoError(t, err)
	d, err := NewDynamic(a, []policy.Rule{r1, r2}, 0.2, 0.4)
	require.NoError(t, err)
	// 8 ranked: round(1.6) = 2 high, round(3.2) = 3 low, 3 middle.
	assert.Equal(t, [4]int{8, 2, 3, 3}, [4]int{d.N, d.NHigh, d.NMid, d.NLow})
	got := precisions(t, a, d)
	assert.Equal(t, []string{"int4", "f16", "f16", "int8", "int8", "int8", "int4", "int4", "int4", "f32"}, got)
	dec := d.Decide(policy.Tensor{Name: "m00", Shape: []int64{4, 8}})
	assert.Equal(t, "flag", dec.Source)
	assert.Equal(t, "^m00$=int4", dec.Rule)
	// A pin on a vector does not quantize it.
	d2, err := NewDynamic(a, []policy.Rule{mustRule(t, `norm=int4`)}, 0.2, 0.4)
	require.NoError(t, err)
	assert.True(t, d2.Decide(policy.Tensor{Name: "norm.weight", Shape: []int64{8}}).Keep)
}

func TestDynamicTiedHeadPin(t *testing.T) {
	a := fakeAnalysis(ranks(3)...)
	a.TiedHead = "m02"
	d, err := NewDynamic(a, []policy.Rule{mustRule(t, `lm_head=f32`)}, 0.2, 0.4)
	require.NoError(t, err)
	assert.Equal(t, quant.F32, d.Decide(policy.Tensor{Name: "m02", Shape: []int64{4, 8}}).Precision)
	assert.Equal(t, 2, d.N)
}

func TestDynamicWidensInfeasible(t *testing.T) {
	a := fakeAnalysis(ranks(3)...)
	last, _ := a.Lookup("m02")
	// Neither INT4 nor F16 can hold it (a value beyond binary16): its
	// predicted INT4 damage is unbounded, so it ranks first, and the top
	// band's F16 is widened to F32.
	last.Candidates[0].Feasible = false
	last.Candidates[2].Feasible = false
	d, err := NewDynamic(a, nil, 0.2, 0.4)
	require.NoError(t, err)
	dec := d.Decide(policy.Tensor{Name: "m02", Shape: []int64{4, 8}})
	assert.Equal(t, quant.F32, dec.Precision)
	assert.Contains(t, dec.Reason, "widened to f32")
	assert.Contains(t, dec.Reason, "rank 1 of 3")
}

// The dynamic policy ranks by predicted damage, (1 + score) × INT4
// relative error, not by score: a quiet tensor that quantizes badly gets
// F16 before a loud one that quantizes well.
func TestDynamicRanksByDamage(t *testing.T) {
	a := fakeAnalysis(0.9, 0.8, 0.5, 0.4, 0.1)
	rel := map[string]float64{"m00": 0.001, "m01": 0.002, "m02": 0.004, "m03": 0.003, "m04": 0.05}
	for name, r := range rel {
		m, _ := a.Lookup(name)
		m.Candidates[0].RelError = r
	}
	d, err := NewDynamic(a, nil, 0.2, 0.4)
	require.NoError(t, err)
	// Damages: m00 0.0019, m01 0.0036, m02 0.006, m03 0.0042, m04 0.055.
	assert.Equal(t, []string{"int4", "int4", "int8", "int8", "f16"}, precisions(t, a, d))
	m04, _ := a.Lookup("m04")
	assert.InDelta(t, 1.1*0.05, Damage(m04), 1e-15)
}

func TestNormalize(t *testing.T) {
	raw := []float64{1e-4, 1e-2, 1, 0}
	n := Normalize(raw)
	assert.InDeltaSlice(t, []float64{0, 0.5, 1, 0}, n, 1e-15)
	// Invariant under r → c·r^k, so |g| and g², or std and variance, agree.
	pow := make([]float64, len(raw))
	for i, r := range raw {
		pow[i] = 7 * r * r
	}
	assert.InDeltaSlice(t, n, Normalize(pow), 1e-12)
	assert.Equal(t, []float64{0.5, 0.5}, Normalize([]float64{3, 3}))
	assert.Equal(t, []float64{0.5}, Normalize([]float64{2}))
}

func TestHull(t *testing.T) {
	opts := []option{{choice{quant.INT4, 128}, 10, 100}, {choice{quant.INT8, 128}, 20, 95}, {choice{p: quant.F16}, 30, 0}}
	// INT8 lies above the chord from INT4 to F16: not on the hull.
	assert.Equal(t, []int{0, 2}, hull(opts))
	opts[1].loss = 20
	assert.Equal(t, []int{0, 1, 2}, hull(opts))
	// A costlier option that saves nothing is dropped.
	assert.Equal(t, []int{0}, hull([]option{{choice{quant.INT4, 128}, 10, 1}, {choice{quant.INT8, 128}, 20, 1}}))
}

func mustRule(t *testing.T, s string) policy.Rule {
	t.Helper()
	r, err := policy.ParseRule(s)
	require.NoError(t, err)
	return r
}
