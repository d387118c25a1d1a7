package importance

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

func signal(t *TensorScore, s Signal) (SignalScore, bool) {
	for _, x := range t.Signals {
		if x.Signal == s {
			return x, true
		}
	}
	return SignalScore{}, false
}

func hasNotice(a *Analysis, sub string) bool {
	for _, n := range a.Notices {
		if strings.Contains(n, sub) {
			return true
		}
	}
	return false
}

func TestMissingSignalsAreDroppedWithNotice(t *testing.T) {
	ck, ts := synthCheckpoint(t)
	var heard []string
	a, err := Analyze(ck, Options{GroupSize: 8, Notice: func(s string) { heard = append(heard, s) }})
	require.NoError(t, err)
	assert.Equal(t, a.Notices, heard)
	assert.True(t, hasNotice(a, "activation signal dropped"))
	assert.True(t, hasNotice(a, "gradient signal dropped"))
	assert.Equal(t, []Signal{WeightSignal}, a.Used)
	assert.False(t, a.Calibrated)
	require.Len(t, a.Matrices(), 5)
	for _, m := range a.Matrices() {
		require.Len(t, m.Signals, 1, m.Name)
		assert.Equal(t, WeightSignal, m.Signals[0].Signal)
		assert.Equal(t, m.Signals[0].Normalized, m.Score)
	}
	// Weight magnitude is the RMS of the weights.
	q, _ := a.Lookup(ts[1].name)
	var ss float64
	for _, v := range ts[1].data {
		ss += float64(v) * float64(v)
	}
	assert.InDelta(t, math.Sqrt(ss/float64(len(ts[1].data))), q.Signals[0].Raw, 1e-9)
	// The embedding (sd 1) is the most important, k_proj (sd 0.05) the least.
	e, _ := a.Lookup("model.embed_tokens.weight")
	k, _ := a.Lookup("model.layers.0.self_attn.k_proj.weight")
	assert.Equal(t, 1, e.Rank)
	assert.Equal(t, 1.0, e.Score)
	assert.Equal(t, 5, k.Rank)
	assert.Equal(t, 0.0, k.Score)
	n, _ := a.Lookup("model.norm.weight")
	assert.False(t, n.Matrix)
	assert.Empty(t, n.Candidates)
}

func TestMeasuredErrors(t *testing.T) {
	ck, ts := synthCheckpoint(t)
	be := cpu.New(0)
	a, err := Analyze(ck, Options{GroupSize: 8, Backend: be})
	require.NoError(t, err)
	d, _ := a.Lookup(ts[4].name) // down_proj 16×24, groups of 8
	require.Len(t, d.Candidates, 3)
	// Recompute the INT4 error directly through the backend.
	l := quant.Layout{Rows: 16, Cols: 24, GroupSize: 8, Precision: quant.INT4}
	sc := make([]uint16, l.NumScales())
	packed := make([]byte, l.PackedBytes())
	deq := make([]float32, l.Elements())
	require.NoError(t, be.GroupScales(sc, ts[4].data, l))
	require.NoError(t, be.Quantize(packed, ts[4].data, sc, l))
	require.NoError(t, be.Dequantize(deq, packed, sc, l))
	var e, e0 float64
	for i, v := range ts[4].data {
		diff := float64(v) - float64(deq[i])
		e += diff * diff
		e0 += float64(v) * float64(v)
	}
	c4, _ := d.Candidate(quant.INT4)
	c8, _ := d.Candidate(quant.INT8)
	c16, _ := d.Candidate(quant.F16)
	assert.InDelta(t, e, c4.Error, 1e-9*e)
	assert.InDelta(t, e/e0, c4.RelError, 1e-9)
	assert.Greater(t, c4.Error, c8.Error)
	assert.Greater(t, c8.Error, c16.Error)
	assert.Equal(t, int64(16*12+2*16*3), c4.Bytes)
	assert.Equal(t, int64(16*24+2*16*3), c8.Bytes)
	assert.Equal(t, int64(2*16*24), c16.Bytes)
	assert.InDelta(t, (1+d.Score)*float64(16*24)*c4.RelError, c4.Loss, 1e-12)
}

func TestActivationWeightedErrors(t *testing.T) {
	ck, ts := synthCheckpoint(t)
	// Channel 0 of q_proj's input is large, the rest tiny: the error is
	// then dominated by column 0.
	x := make([]float32, 4*16)
	for tok := range 4 {
		x[tok*16] = 10
		for c := 1; c < 16; c++ {
			x[tok*16+c] = 0.001
		}
	}
	c := Start(nil)
	require.NoError(t, c.Observe("model.layers.0.self_attn.q_proj", x, 4, 16))
	cal, _ := c.End()
	a, err := Analyze(ck, Options{GroupSize: 8, Calib: cal, Weights: map[Signal]float64{WeightSignal: 1, ActivationSignal: 1}})
	require.NoError(t, err)
	assert.True(t, a.Calibrated)
	q, _ := a.Lookup(ts[1].name)
	assert.Equal(t, "model.layers.0.self_attn.q_proj", q.Layer)
	act, ok := signal(q, ActivationSignal)
	require.True(t, ok)
	assert.InDelta(t, 0, act.Raw, 1e-12) // constant inputs: no variance
	plain, _ := Analyze(ck, Options{GroupSize: 8})
	qp, _ := plain.Lookup(ts[1].name)
	c4, _ := q.Candidate(quant.INT4)
	p4, _ := qp.Candidate(quant.INT4)
	assert.NotEqual(t, p4.Error, c4.Error)
	// Other matrices have no layer: plain squared error, with a notice.
	k, _ := a.Lookup(ts[2].name)
	k4, _ := k.Candidate(quant.INT4)
	kp, _ := plain.Lookup(ts[2].name)
	kp4, _ := kp.Candidate(quant.INT4)
	assert.Equal(t, kp4.Error, k4.Error)
	assert.True(t, hasNotice(a, "activation signal dropped for model.layers.0.self_attn.k_proj.weight"))
	assert.True(t, hasNotice(a, "an embedding lookup has no input activations"))

	// A layer whose width disagrees with the matrix is an input error.
	c = Start(nil)
	require.NoError(t, c.Observe("model.layers.0.self_attn.q_proj", make([]float32, 8), 1, 8))
	bad, _ := c.End()
	_, err = Analyze(ck, Options{GroupSize: 8, Calib: bad})
	assert.ErrorIs(t, err, quant.ErrInput)
}

func TestGradients(t *testing.T) {
	ck, ts := synthCheckpoint(t)
	dir := t.TempDir()
	constant := func(name string, v float32, shape ...int64) tensor {
		x := randTensor(name, 0, 0, shape...)
		for i := range x.data {
			x.data[i] = v
		}
		return x
	}
	gp := filepath.Join(dir, "grads.safetensors")
	writeF32(t, gp, nil,
		constant(ts[0].name, 1e-4, 32, 16), // embedding: least sensitive
		constant(ts[1].name, 1e-1, 16, 16), // q_proj: most sensitive
		constant(ts[2].name, 1e-2, 8, 16),
		constant(ts[3].name, 1e-3, 24, 16),
		constant("model.norm.weight", 1, 16), // vectors are not scored
		constant("not.in.checkpoint", 1, 2),
	)
	a, err := Analyze(ck, Options{GroupSize: 8, Grads: gp, Weights: map[Signal]float64{GradientSignal: 1}})
	require.NoError(t, err)
	assert.Equal(t, []Signal{GradientSignal}, a.Used)
	want := map[string][2]float64{ // raw, normalized
		ts[0].name: {1e-4, 0}, ts[1].name: {1e-1, 1}, ts[2].name: {1e-2, 2.0 / 3}, ts[3].name: {1e-3, 1.0 / 3},
	}
	for name, w := range want {
		m, _ := a.Lookup(name)
		g, ok := signal(m, GradientSignal)
		require.True(t, ok, name)
		assert.InDelta(t, w[0], g.Raw, 1e-6*w[0], name)
		assert.InDelta(t, w[1], g.Normalized, 1e-6, name)
		assert.InDelta(t, w[1], m.Score, 1e-6, name)
	}
	q, _ := a.Lookup(ts[1].name)
	assert.Equal(t, 1, q.Rank)
	// down_proj has no gradient: dropped for it, with a notice, and no score.
	d, _ := a.Lookup(ts[4].name)
	assert.Empty(t, d.Signals)
	assert.Equal(t, 0.0, d.Score)
	assert.True(t, hasNotice(a, "gradient signal dropped for "+ts[4].name))
	assert.True(t, hasNotice(a, "1 tensors of the gradients file"))

	// With the weight signal too, a tensor's score averages what it has.
	a2, err := Analyze(ck, Options{GroupSize: 8, Grads: gp})
	require.NoError(t, err)
	q2, _ := a2.Lookup(ts[1].name)
	require.Len(t, q2.Signals, 2)
	assert.InDelta(t, (q2.Signals[0].Normalized+q2.Signals[1].Normalized)/2, q2.Score, 1e-12)

	// Negative values and wrong shapes are input errors.
	neg := filepath.Join(dir, "neg.safetensors")
	writeF32(t, neg, nil, constant(ts[1].name, -1, 16, 16))
	_, err = Analyze(ck, Options{GroupSize: 8, Grads: neg})
	assert.ErrorIs(t, err, quant.ErrInput)
	shape := filepath.Join(dir, "shape.safetensors")
	writeF32(t, shape, nil, constant(ts[1].name, 1, 16, 8))
	_, err = Analyze(ck, Options{GroupSize: 8, Grads: shape})
	assert.ErrorIs(t, err, quant.ErrInput)
	_, err = Analyze(ck, Options{Grads: filepath.Join(dir, "missing.safetensors")})
	assert.ErrorIs(t, err, quant.ErrInput)
}

func TestAnalyzeOptionErrors(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	for _, w := range []map[Signal]float64{
		{"loss": 1},
		{WeightSignal: -1},
		{WeightSignal: math.NaN()},
		{WeightSignal: 0, ActivationSignal: 0},
	} {
		_, err := Analyze(ck, Options{Weights: w})
		assert.ErrorIs(t, err, quant.ErrInput, "%v", w)
	}
	_, err := Analyze(ck, Options{GroupSize: quant.MaxGroupSize + 1})
	assert.ErrorIs(t, err, quant.ErrInput)
}

// Measured with the scale search (no calibration, so the measured error is
// the search's own unweighted objective), no candidate errs more than with
// absmax round to nearest, and the INT4 candidates err less somewhere.
func TestSearchCandidatesNeverErrMore(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	rtn, err := Analyze(ck, Options{GroupSize: 8, GroupSizes: []int{16}})
	require.NoError(t, err)
	srch, err := Analyze(ck, Options{GroupSize: 8, GroupSizes: []int{16}, Search: true})
	require.NoError(t, err)
	assert.Equal(t, "rtn", rtn.Rounding)
	assert.Equal(t, "search", srch.Rounding)
	better := 0
	for _, m := range rtn.Matrices() {
		s, ok := srch.Lookup(m.Name)
		require.True(t, ok)
		require.Len(t, s.Candidates, len(m.Candidates))
		for i, c := range m.Candidates {
			sc := s.Candidates[i]
			require.Equal(t, c.Precision, sc.Precision)
			require.Equal(t, c.GroupSize, sc.GroupSize)
			assert.Equal(t, c.Bytes, sc.Bytes, "rounding does not change the bytes")
			assert.LessOrEqual(t, sc.Error, c.Error, "%s %s g%d", m.Name, c.Precision, c.GroupSize)
			if c.Precision == quant.INT4 && sc.Error < c.Error {
				better++
			}
		}
	}
	assert.Positive(t, better)
}
