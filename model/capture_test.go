package model

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
)

// A Stepper run through every layer reaches the head with the bits of
// Forward, and a staged run stops right after its last weight without
// changing the hidden states.
func TestStepperMatchesForward(t *testing.T) {
	m, err := Load(requireStories(t), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	seqs := [][]int{{1, 5, 9, 200, 3, 17, 42}, {1, 7, 7, 7}}
	want := map[int][]float32{}
	for i, seq := range seqs {
		s := m.NewSession(1, len(seq))
		_, err := s.Forward([][]int{seq}, func(w string, x []float32, tokens, in int) {
			if w == m.HeadName() {
				want[i] = append([]float32(nil), x...)
			}
		})
		require.NoError(t, err)
	}
	st, err := m.NewStepper(seqs)
	require.NoError(t, err)
	assert.Equal(t, 11, st.Tokens())
	for li := range m.Layers() {
		stages := m.Stages(li)
		require.Len(t, stages, 4)
		var seen []string
		require.NoError(t, st.Layer(context.Background(), li, stages[1][0], false, func(w string, x []float32, tokens, in int) {
			seen = append(seen, w)
		}, nil))
		// q, k, v then o, for each of the two sequences: nothing after o.
		require.Len(t, seen, 8)
		assert.Equal(t, stages[1][0], seen[3])
		require.NoError(t, st.Layer(context.Background(), li, "", true, nil, nil))
	}
	got := map[int][]float32{}
	n := 0
	require.NoError(t, st.Head(context.Background(), func(w string, x []float32, tokens, in int) {
		got[n] = append([]float32(nil), x...)
		n++
	}))
	for i := range seqs {
		require.Len(t, got[i], len(want[i]))
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				t.Fatalf("sequence %d element %d: stepper %v, forward %v", i, j, got[i][j], want[i][j])
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, st.Layer(ctx, 0, "", true, nil, nil), context.Canceled)
	_, err = m.NewStepper([][]int{{1, 99999}})
	require.Error(t, err)
}
