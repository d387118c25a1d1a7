package eval

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/synth"
)

// tinyModel is the synthetic 2-layer Llama (vocab 256) in F32.
func tinyModel(t *testing.T) *model.Model {
	t.Helper()
	p, err := synth.Lookup("tiny")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "tiny")
	require.NoError(t, synth.Write(dir, synth.Options{Preset: p, Seed: 5, DType: safetensors.F32}))
	m, err := model.Load(dir, cpu.New(0))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func seqs(n, length int) [][]int {
	out := make([][]int, n)
	for i := range out {
		for j := range length {
			out[i] = append(out[i], (7*i+13*j+1)%256)
		}
	}
	return out
}

// TestCheckSequences: every refusal is an input error that says which
// sequence and what is wrong with it.
func TestCheckSequences(t *testing.T) {
	m := tinyModel(t)
	require.NoError(t, CheckSequences(m, seqs(2, 5), 2))
	long := make([]int, m.Config.MaxPositions+1)
	for _, tc := range []struct {
		name string
		seqs [][]int
		want string
	}{
		{"none", nil, "no token sequences"},
		{"one token", [][]int{{1, 2}, {1}}, "sequence 1 has 1 tokens; need at least 2"},
		{"outside the vocabulary", [][]int{{1, 2, 3, 256}}, "sequence 0 position 3: token 256 is outside the vocabulary [0, 256)"},
		{"negative", [][]int{{1, -4}}, "token -4"},
		{"too long", [][]int{long}, "more than the model's max_position_embeddings 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSequences(m, tc.seqs, 2)
			require.ErrorIs(t, err, quant.ErrInput)
			assert.Contains(t, err.Error(), tc.want)
			_, err = Evaluate(m, nil, tc.seqs, Options{})
			require.ErrorIs(t, err, quant.ErrInput, "Evaluate refuses the same before running anything")
		})
	}
	_, err := Sample(m, 1, m.Config.MaxPositions+1, 1, 1)
	require.ErrorIs(t, err, quant.ErrInput)
	_, err = Sample(m, 1, 4, 256, 1)
	require.ErrorIs(t, err, quant.ErrInput, "a start token outside the vocabulary")
}

// TestEvaluateProgress: the passes report every token once per model.
func TestEvaluateProgress(t *testing.T) {
	m := tinyModel(t)
	in := append(seqs(3, 6), seqs(2, 4)...)
	done := 0
	res, err := Evaluate(m, m, in, Options{Batch: 2, Progress: func(n int) { done += n }})
	require.NoError(t, err)
	assert.Equal(t, 2*Tokens(in), done)
	assert.Equal(t, 3*5+2*3, res.Scored)
	assert.Zero(t, res.KLMax, "a model against itself")
}

// TestEvaluateContextCancelled: a cancelled context stops the evaluation
// with an error wrapping context.Canceled, before any logits of an
// unfinished batch are handed out.
func TestEvaluateContextCancelled(t *testing.T) {
	m := tinyModel(t)
	in := seqs(6, 8)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	logits := 0
	_, err := EvaluateContext(ctx, m, nil, in, Options{Logits: func(int, []float32) { logits++ }})
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, logits)

	// Cancelled in the first pass, after its first layer: that pass stops,
	// nothing after it runs and no logits are handed out.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	passes := 0
	_, err = EvaluateContext(ctx, m, m, in, Options{Batch: 2,
		Logits:   func(int, []float32) { logits++ },
		Progress: func(int) { passes++; cancel() },
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, passes, "the quantized model's pass stops at once")
	assert.Zero(t, logits)
}

// TestSampleContext: the same draws as Sample, progress for every step,
// and a cancelled context stops it.
func TestSampleContext(t *testing.T) {
	m := tinyModel(t)
	want, err := Sample(m, 3, 7, 1, 42)
	require.NoError(t, err)
	done := 0
	got, err := SampleContext(context.Background(), m, 3, 7, 1, 42, func(n int) { done += n })
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, 3*6, done)

	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	_, err = SampleContext(ctx, m, 3, 50, 1, 42, func(int) {
		if steps++; steps == 2 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 2, steps)
}
