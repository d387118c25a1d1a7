package importance

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
)

// plannedBytes is the exact size of the output qformat plans for p.
func plannedBytes(t *testing.T, ck *checkpoint.Checkpoint, p Policy, g int, shard int64) int64 {
	t.Helper()
	var in []qformat.Input
	for _, x := range ck.Tensors {
		in = append(in, qformat.Input{Name: x.Name, DType: x.DType, Shape: x.Shape})
	}
	plan, err := qformat.Build(in, p.Decide, qformat.Options{GroupSize: g, MaxShardSize: shard, Config: ck.Config, PolicyName: p.Name()})
	require.NoError(t, err)
	return plan.Layout.TotalBytes()
}

// fixed is a policy with given precisions for the matrices.
type fixed struct {
	name string
	p    map[string]quant.Precision
	g    map[string]int // group sizes (nil or absent: the plan's)
}

func (f fixed) Name() string { return f.name }
func (f fixed) Decide(t policy.Tensor) policy.Decision {
	d := policy.Decision{Name: t.Name}
	p, ok := f.p[t.Name]
	if len(t.Shape) < 2 || !ok {
		d.Keep = true
		return d
	}
	d.Precision = p
	if p.Quantized() {
		d.GroupSize = f.g[t.Name]
	}
	return d
}

// bruteForce returns the least loss over every assignment of the candidates
// whose exact size fits in [lo, hi], or false when none does.
func bruteForce(t *testing.T, ck *checkpoint.Checkpoint, a *Analysis, lo, hi int64) (float64, bool) {
	mats := a.Matrices()
	best, found := 0.0, false
	idx := make([]int, len(mats))
	for {
		f := fixed{name: "budget", p: map[string]quant.Precision{}, g: map[string]int{}}
		loss := 0.0
		for i, m := range mats {
			c := m.Candidates[idx[i]]
			f.p[m.Name], f.g[m.Name] = c.Precision, c.GroupSize
			loss += c.Loss
		}
		if s := plannedBytes(t, ck, f, a.GroupSize, DefaultMaxShardSize); s >= lo && s <= hi && (!found || loss < best) {
			best, found = loss, true
		}
		i := 0
		for ; i < len(idx); i++ {
			idx[i]++
			if idx[i] < len(mats[i].Candidates) {
				break
			}
			idx[i] = 0
		}
		if i == len(idx) {
			return best, found
		}
	}
}

func TestBudgetAgainstBruteForce(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	a, err := Analyze(ck, Options{GroupSize: 8})
	require.NoError(t, err)
	all4 := fixed{"budget", map[string]quant.Precision{}, nil}
	all16 := fixed{"budget", map[string]quant.Precision{}, nil}
	for _, m := range a.Matrices() {
		all4.p[m.Name], all16.p[m.Name] = quant.INT4, quant.F16
	}
	lo := plannedBytes(t, ck, all4, 8, DefaultMaxShardSize)
	hi := plannedBytes(t, ck, all16, 8, DefaultMaxShardSize)
	for _, frac := range []float64{0, 0.1, 0.25, 0.5, 0.75, 0.9, 1} {
		target := lo + int64(frac*float64(hi-lo))
		b, got, opt := budgetAgainstBruteForce(t, ck, a, target)
		// In the window when some assignment is; then the loss is checked
		// against the best assignment in the window.
		if wopt, ok := bruteForce(t, ck, a, windowLow(target), target); ok {
			assert.GreaterOrEqual(t, got, windowLow(target), "target %d", target)
			// On this instance the local search reaches the optimum of the window.
			assert.LessOrEqual(t, b.Loss, wopt+1e-9*wopt, "target %d", target)
			t.Logf("target %d: planned %d, loss %.6g, best in window %.6g, best overall %.6g, LP bound %.6g, greedy bound %.3g",
				target, got, b.Loss, wopt, opt, b.LowerBound, b.GreedyBound)
		} else {
			// No assignment lands in the window: the solver is held to its
			// stated bound (within one upgrade step's loss of the optimum).
			assert.LessOrEqual(t, b.Loss, opt+b.GreedyBound, "target %d", target)
			t.Logf("target %d: planned %d, loss %.6g, best overall %.6g, greedy bound %.3g (no assignment in the window)", target, got, b.Loss, opt, b.GreedyBound)
		}
	}
}

// budgetAgainstBruteForce solves for target and checks the result against
// every assignment: exactly planned, within the target, never better than
// the optimum, with the LP bound below it. It returns the budget, its
// planned size and the optimum.
func budgetAgainstBruteForce(t *testing.T, ck *checkpoint.Checkpoint, a *Analysis, target int64) (*Budget, int64, float64) {
	t.Helper()
	b, err := NewBudget(a, nil, ck, target, 0)
	require.NoError(t, err, "target %d", target)
	got := plannedBytes(t, ck, b, a.GroupSize, 0)
	assert.Equal(t, b.PlannedBytes, got)
	assert.LessOrEqual(t, got, target)
	opt, ok := bruteForce(t, ck, a, 0, target)
	require.True(t, ok)
	assert.GreaterOrEqual(t, b.Loss, opt-1e-9*opt, "target %d", target)
	assert.LessOrEqual(t, b.LowerBound, opt+1e-9*opt, "target %d", target)
	return b, got, opt
}

func TestBudgetInfeasible(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	a, err := Analyze(ck, Options{GroupSize: 8})
	require.NoError(t, err)
	_, err = NewBudget(a, nil, ck, 100, 0)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), "below the smallest possible output")
	_, err = NewBudget(a, nil, ck, 0, 0)
	assert.ErrorIs(t, err, quant.ErrInput)
	// Pins count: pinning the embedding to F32 raises the floor.
	all4 := fixed{"budget", map[string]quant.Precision{}, nil}
	for _, m := range a.Matrices() {
		all4.p[m.Name] = quant.INT4
	}
	floor := plannedBytes(t, ck, all4, 8, DefaultMaxShardSize)
	_, err = NewBudget(a, nil, ck, floor, 0)
	require.NoError(t, err)
	_, err = NewBudget(a, []policy.Rule{mustRule(t, "embed_tokens=f32")}, ck, floor, 0)
	assert.ErrorIs(t, err, quant.ErrInput)
}

func TestBudgetPins(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	a, err := Analyze(ck, Options{GroupSize: 8})
	require.NoError(t, err)
	b, err := NewBudget(a, []policy.Rule{mustRule(t, "k_proj=f32")}, ck, 1<<20, 0)
	require.NoError(t, err)
	d := b.Decide(policy.Tensor{Name: "model.layers.0.self_attn.k_proj.weight", Shape: []int64{8, 16}})
	assert.Equal(t, quant.F32, d.Precision)
	assert.Equal(t, "k_proj=f32", d.Rule)
	// A generous budget gives every other matrix F16, the least error.
	for _, m := range a.Matrices() {
		if m.Name != "model.layers.0.self_attn.k_proj.weight" {
			assert.Equal(t, quant.F16, b.Decide(policy.Tensor{Name: m.Name, Shape: m.Shape}).Precision, m.Name)
		}
	}
	assert.True(t, b.Decide(policy.Tensor{Name: "model.norm.weight", Shape: []int64{16}}).Keep)
}

func TestTargets(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	params := int64(32*16 + 16*16 + 8*16 + 24*16 + 16*24 + 16)
	r, err := RatioTarget(ck, 6)
	require.NoError(t, err)
	assert.Equal(t, 4*params/6, r)
	bpw, err := BPWTarget(ck, 4.5)
	require.NoError(t, err)
	assert.Equal(t, int64(4.5*float64(params)/8), bpw)
	for _, bad := range []float64{0, -1} {
		_, err := RatioTarget(ck, bad)
		assert.ErrorIs(t, err, quant.ErrInput)
		_, err = BPWTarget(ck, bad)
		assert.ErrorIs(t, err, quant.ErrInput)
	}
}

// With several group sizes the budget chooses precision and group size per
// matrix; it is checked against every assignment, as above.
func TestBudgetGroupSizesAgainstBruteForce(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	a, err := Analyze(ck, Options{GroupSize: 16, GroupSizes: []int{8, 16}})
	require.NoError(t, err)
	assert.Equal(t, []int{8, 16}, a.GroupSizes)
	for _, m := range a.Matrices() {
		require.Len(t, m.Candidates, 5, m.Name) // INT4 g16, g8; INT8 g16, g8; F16
		c16, ok := m.CandidateAt(quant.INT4, 16)
		require.True(t, ok)
		c8, ok := m.CandidateAt(quant.INT4, 8)
		require.True(t, ok)
		// Smaller groups cost more scales and, on these normal weights, err less.
		assert.Greater(t, c8.Bytes, c16.Bytes, m.Name)
		assert.Less(t, c8.RelError, c16.RelError, m.Name)
		def, _ := m.Candidate(quant.INT4)
		assert.Equal(t, 16, def.GroupSize, "Candidate looks up the analysis's group size")
	}
	all4 := fixed{"budget", map[string]quant.Precision{}, nil}
	all16 := fixed{"budget", map[string]quant.Precision{}, nil}
	for _, m := range a.Matrices() {
		all4.p[m.Name], all16.p[m.Name] = quant.INT4, quant.F16
	}
	lo := plannedBytes(t, ck, all4, 16, DefaultMaxShardSize)
	hi := plannedBytes(t, ck, all16, 16, DefaultMaxShardSize)
	used := map[int]bool{}
	for _, frac := range []float64{0.05, 0.3, 0.6} {
		target := lo + int64(frac*float64(hi-lo))
		b, got, _ := budgetAgainstBruteForce(t, ck, a, target)
		if wopt, ok := bruteForce(t, ck, a, windowLow(target), target); ok {
			assert.GreaterOrEqual(t, got, windowLow(target), "target %d", target)
			assert.LessOrEqual(t, b.Loss, wopt+1e-9*wopt, "target %d", target)
		}
		for _, m := range a.Matrices() {
			d := b.Decide(policy.Tensor{Name: m.Name, Shape: m.Shape})
			if d.Precision.Quantized() {
				require.Contains(t, []int{8, 16}, d.GroupSize, m.Name)
				used[d.GroupSize] = true
			} else {
				assert.Zero(t, d.GroupSize, m.Name)
			}
		}
	}
	assert.Len(t, used, 2, "both group sizes are chosen somewhere across the targets")
}

// GroupSizes without the analysis's group size: that size is measured, but
// the budget never chooses it.
func TestBudgetChoosesOnlyGivenGroupSizes(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	a, err := Analyze(ck, Options{GroupSize: 16, GroupSizes: []int{8}})
	require.NoError(t, err)
	assert.Equal(t, []int{8, 16}, a.GroupSizes, "both are measured")
	b, err := NewBudget(a, nil, ck, 1<<20, 0)
	require.NoError(t, err)
	for _, m := range a.Matrices() {
		if d := b.Decide(policy.Tensor{Name: m.Name, Shape: m.Shape}); d.Precision.Quantized() {
			assert.Equal(t, 8, d.GroupSize, m.Name)
		}
	}
	// At a target between the all-INT4 and all-F16 sizes every quantized
	// choice is still g8.
	b, err = NewBudget(a, nil, ck, 4000, 0)
	require.NoError(t, err)
	quantized := 0
	for _, m := range a.Matrices() {
		if d := b.Decide(policy.Tensor{Name: m.Name, Shape: m.Shape}); d.Precision.Quantized() {
			assert.Equal(t, 8, d.GroupSize, m.Name)
			quantized++
		}
	}
	assert.Positive(t, quantized)
}
