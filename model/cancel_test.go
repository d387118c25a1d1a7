package model

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// withChunkWork runs fn with products cut into blocks of at most work
// multiply-adds, restoring the default after.
func withChunkWork(t *testing.T, work int, fn func()) {
	t.Helper()
	old := chunkWork
	chunkWork = work
	defer func() { chunkWork = old }()
	fn()
}

// TestChunkedProductsSameBits: cutting every product into blocks of rows
// (here a single row each, the most extreme cut) gives the same bits as
// one call, for float32 and packed weights and for the MoE path, since the
// blocks exist only to check the context between them.
func TestChunkedProductsSameBits(t *testing.T) {
	dense := writeSynth(t, "tiny", 0)
	moe := writeSynth(t, "tiny-moe", 0)
	for _, tc := range []struct{ name, path string }{
		{"f32", dense},
		{"moe", moe},
		{"quantized", quantizeTo(t, moe, 32, `embed_tokens=int4`, `lm_head=int8`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(tc.path, cpu.New(0))
			require.NoError(t, err)
			defer m.Close()
			toks := [][]int{{1, 17, 200, 33, 91, 5}, {3, 3, 9, 100, 101, 7}}
			whole, err := m.NewSession(2, 6).Forward(toks, nil)
			require.NoError(t, err)
			withChunkWork(t, 1, func() {
				cut, err := m.NewSession(2, 6).ForwardContext(context.Background(), toks, nil)
				require.NoError(t, err)
				requireBits(t, cut, whole, "one-row blocks vs one product")
			})
		})
	}
}

// TestForwardContextCancelled: a context already cancelled stops the pass
// before any product, with an error wrapping the cause; the session is
// unchanged and gives the right logits afterwards.
func TestForwardContextCancelled(t *testing.T) {
	m, err := Load(writeSynth(t, "tiny", 0), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	toks := [][]int{{1, 2, 3, 4}}
	want, err := m.NewSession(1, 8).Forward(toks, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("interrupt signal received")
	cancel(cause)
	s := m.NewSession(1, 8)
	calls := 0
	_, err = s.ForwardContext(ctx, toks, func(string, []float32, int, int) { calls++ })
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, cause, "the cause (which signal) is kept")
	assert.Zero(t, s.Len())
	assert.LessOrEqual(t, calls, 1, "at most the first product's input is observed before the check")

	got, err := s.Forward(toks, nil)
	require.NoError(t, err)
	requireBits(t, got, want, "after a cancelled call")
}

// TestForwardContextStopsMidPass: cancelling while a pass runs (from the
// observer, so the moment is exact) stops it at the next product: no
// linear layer after the one being computed is reached.
func TestForwardContextStopsMidPass(t *testing.T) {
	m, err := Load(writeSynth(t, "tiny-moe", 2), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	names := m.LinearNames()
	stopAt := "model.layers.1.self_attn.q_proj.weight"
	require.Contains(t, names, stopAt)
	for _, work := range []int{chunkWork, 1} {
		withChunkWork(t, work, func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var seen []string
			s := m.NewSession(1, 16)
			_, err := s.ForwardContext(ctx, [][]int{{1, 5, 9, 13, 17, 21, 25, 29}}, func(w string, _ []float32, _, _ int) {
				seen = append(seen, w)
				if w == stopAt {
					cancel()
				}
			})
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, stopAt, seen[len(seen)-1], "nothing after the cancelling layer runs (chunk work %d)", work)
			assert.Zero(t, s.Len())
		})
	}
}

// TestForwardTokenOutsideVocabularyIsInput: a token id the model does not
// have is the caller's input, named with its position.
func TestForwardTokenOutsideVocabularyIsInput(t *testing.T) {
	m, err := Load(writeSynth(t, "tiny", 0), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	_, err = m.NewSession(1, 4).Forward([][]int{{1, 256}}, nil)
	require.ErrorIs(t, err, quant.ErrInput)
	assert.True(t, strings.Contains(err.Error(), "token 1 of sequence 0 is 256"), err.Error())
}

// TestOnLayer: the hook sees every layer and the head, in order.
func TestOnLayer(t *testing.T) {
	m, err := Load(writeSynth(t, "tiny", 0), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	s := m.NewSession(1, 4)
	var done []int
	s.OnLayer = func(d, total int) {
		assert.Equal(t, 3, total)
		done = append(done, d)
	}
	_, err = s.Forward([][]int{{1, 2}}, nil)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 3}, done)
}

// TestLayerProgress: the tokens are handed out in shares that add up to
// all of them, none twice.
func TestLayerProgress(t *testing.T) {
	var got []int
	hook := LayerProgress(10, func(n int) { got = append(got, n) })
	for d := 1; d <= 7; d++ {
		hook(d, 7)
	}
	sum := 0
	for _, n := range got {
		assert.Positive(t, n)
		sum += n
	}
	assert.Equal(t, 10, sum)
}
