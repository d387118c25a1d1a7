package importance

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/synth"
)

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestAnalyzeProgressAndCancel: progress covers the data of every matrix
// exactly once; a cancellation during the analysis stops it at the next
// block, so no more progress is reported after it.
func TestAnalyzeProgressAndCancel(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	var total int64
	tensors := map[string]bool{}
	_, err := AnalyzeContext(context.Background(), ck, Options{Progress: func(name string, n int64) {
		total += n
		tensors[name] = true
	}})
	require.NoError(t, err)
	assert.Equal(t, AnalyzedBytes(ck), total)
	assert.Len(t, tensors, 5, "every matrix, not the norm vector")

	_, err = AnalyzeContext(cancelled(), ck, Options{Progress: func(string, int64) { t.Error("progress after cancellation") }})
	require.ErrorIs(t, err, context.Canceled)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	_, err = AnalyzeContext(ctx, ck, Options{Progress: func(string, int64) { calls++; cancel() }})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, calls, "the block after the cancellation does not run")
}

func TestNewBudgetContextCancelled(t *testing.T) {
	ck, _ := synthCheckpoint(t)
	a, err := Analyze(ck, Options{})
	require.NoError(t, err)
	target, err := RatioTarget(ck, 1.5)
	require.NoError(t, err)
	_, err = NewBudget(a, nil, ck, target, 0)
	require.NoError(t, err)
	_, err = NewBudgetContext(cancelled(), a, nil, ck, target, 0)
	require.ErrorIs(t, err, context.Canceled)
}

// TestFromModelContext: the same statistics as FromModel, progress per
// sequence, and a cancellation after the first sequence stops it.
func TestFromModelContext(t *testing.T) {
	p, err := synth.Lookup("tiny")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "tiny")
	require.NoError(t, synth.Write(dir, synth.Options{Preset: p, Seed: 2, DType: safetensors.F32}))
	m, err := model.Load(dir, cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	seqs := [][]int{{1, 2, 3}, {4, 5, 6, 7}, {8, 9}}

	want, err := FromModel(m, seqs, nil)
	require.NoError(t, err)
	done := 0
	got, err := FromModelContext(context.Background(), m, seqs, nil, func(n int) { done += n })
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, 9, done)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	_, err = FromModelContext(ctx, m, seqs, nil, func(int) { calls++; cancel() })
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, calls)
}

func TestReadContextCancelled(t *testing.T) {
	p := filepath.Join(t.TempDir(), "acts.safetensors")
	writeF32(t, p, nil, randTensor("model.layers.0.self_attn.q_proj", 1, 1, 4, 16))
	var read int64
	_, err := ReadContext(context.Background(), []string{p}, nil, func(n int64) { read += n })
	require.NoError(t, err)
	assert.Equal(t, int64(4*4*16), read, "progress counts the tensor data")
	_, err = ReadContext(cancelled(), []string{p}, nil, nil)
	require.ErrorIs(t, err, context.Canceled)
}
