package gptq

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// The pipeline asks for blocks of rows: each block must get exactly the
// stored codes and scales of a Sequential result, and a layout that
// differs from the one quantized is an error, not silently other codes.
func TestRounderServesResultsByRowBlock(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const rows, k, tokens = 10, 48, 200
	l := quant.Layout{Rows: rows, Cols: k, GroupSize: 16, Precision: quant.INT4}
	h, _ := momentOf(t, correlated(rng, tokens, k), tokens, k)
	w := randomWeights(rng, rows*k)
	res, err := Quantize(w, l, h, tokens, Options{Search: true})
	require.NoError(t, err)
	r, err := pack(res.W, res.Scales, l)
	require.NoError(t, err)
	rd := &Rounder{Results: map[string]*Rounded{"m": r}}
	be := cpu.New(1)
	for r0 := 0; r0 < rows; r0 += 4 {
		bl := l
		bl.Rows = min(4, rows-r0)
		blk := append([]float32(nil), w[r0*k:(r0+bl.Rows)*k]...)
		scales := make([]uint16, bl.NumScales())
		handled, err := rd.Round("m", r0, blk, scales, bl)
		require.NoError(t, err)
		require.True(t, handled)
		packed := make([]byte, bl.PackedBytes())
		require.NoError(t, be.Quantize(packed, blk, scales, bl))
		assert.Equal(t, r.Packed[r0*l.RowBytes():(r0+bl.Rows)*l.RowBytes()], packed, "rows from %d", r0)
		assert.Equal(t, r.Scales[r0*l.GroupsPerRow():(r0+bl.Rows)*l.GroupsPerRow()], scales, "rows from %d", r0)
	}
	other := l
	other.GroupSize = 32
	_, err = rd.Round("m", 0, make([]float32, other.Elements()), make([]uint16, other.NumScales()), other)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "g16")
	// A tensor without a result: not handled without Search, searched with it.
	handled, err := rd.Round("other", 0, w, make([]uint16, l.NumScales()), l)
	require.NoError(t, err)
	assert.False(t, handled)
	rd.Search = true
	sc := make([]uint16, l.NumScales())
	handled, err = rd.Round("other", 0, w, sc, l)
	require.NoError(t, err)
	assert.True(t, handled)
	want := make([]uint16, l.NumScales())
	require.NoError(t, SearchScales(want, w, nil, l))
	assert.Equal(t, want, sc)
}
