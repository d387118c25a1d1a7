package model

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Running every layer with the Stepper and then Logits gives Forward's
// logits bit for bit; SetStates rewinds to a saved layer boundary, and
// SwapWeights changes one matrix and puts it back.
func TestStepperLogitsAndSwap(t *testing.T) {
	m := loadStories(t)
	tokens, _ := storiesReference(t)
	seqs := [][]int{tokens[:24], tokens[24:40]}
	var want [][]float32
	for _, s := range seqs {
		out, err := m.NewSession(1, len(s)).Forward([][]int{s}, nil)
		require.NoError(t, err)
		want = append(want, out)
	}
	st, err := m.NewStepper(seqs)
	require.NoError(t, err)
	var mid [][]float32
	for li := range m.Layers() {
		if li == m.Layers()/2 {
			mid = st.States()
		}
		require.NoError(t, st.Layer(context.Background(), li, "", true, nil, nil))
	}
	logits := func() [][]float32 {
		var got [][]float32
		require.NoError(t, st.Logits(context.Background(), func(i int, l []float32) error {
			got = append(got, slices.Clone(l))
			return nil
		}))
		return got
	}
	got := logits()
	require.Len(t, got, 2)
	for i := range want {
		requireBits(t, want[i], got[i], "stepper logits")
	}

	// Rewind to the middle and run the rest again: the same logits.
	require.NoError(t, st.SetStates(mid))
	for li := m.Layers() / 2; li < m.Layers(); li++ {
		require.NoError(t, st.Layer(context.Background(), li, "", true, nil, nil))
	}
	for i, l := range logits() {
		requireBits(t, want[i], l, "rewound logits")
	}

	// A zeroed head changes the logits; swapping back restores them.
	name := m.HeadName()
	w, _, _, ok := m.Weights(name)
	require.True(t, ok)
	old, err := m.SwapWeights(name, make([]float32, len(w)))
	require.NoError(t, err)
	for _, l := range logits() {
		assert.Equal(t, make([]float32, len(l)), l)
	}
	_, err = m.SwapWeights(name, old)
	require.NoError(t, err)
	for i, l := range logits() {
		requireBits(t, want[i], l, "restored logits")
	}
	_, err = m.SwapWeights(name, make([]float32, 3))
	assert.ErrorContains(t, err, "weights")
	_, err = m.SwapWeights("nope", nil)
	assert.Error(t, err)
	assert.Error(t, st.SetStates(mid[:1]))
}
