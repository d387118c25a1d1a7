package ggufexport

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/gguf"
	"github.com/mixq/mixq/synth"
)

// quantizedTinyMoE quantizes the synthetic MoE with the static policy.
func quantizedTinyMoE(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p, err := synth.Lookup("tiny-moe")
	require.NoError(t, err)
	in, q := filepath.Join(dir, "in"), filepath.Join(dir, "q")
	require.NoError(t, synth.Write(in, synth.Options{Preset: p, Seed: 3}))
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	defer ck.Close()
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	require.NoError(t, err)
	_, err = mixq.Quantize(context.Background(), ck, plan, q, mixq.Options{})
	require.NoError(t, err)
	return q
}

// The written file is exactly the planned size, its experts hold the same
// code bytes as mixq's (re-packed), and a cancelled export leaves nothing.
func TestWrite(t *testing.T) {
	q := quantizedTinyMoE(t)
	m, err := mixq.OpenQuantized(q)
	require.NoError(t, err)
	defer m.Close()
	x, err := Plan(m.Checkpoint.Config, Sources(m), Options{NoVocab: true, TokenizerDir: q})
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, x.Write(context.Background(), m, out, nil))
	st, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, x.Layout.Size, st.Size())

	// Expert 1 of blk.0.ffn_down_exps is the second of four stacked
	// [64, 128] INT4 matrices: Q4_0 block b of its row r re-packs columns
	// 32b..32b+31 of row r of experts.1.w2, with that group's scale.
	g, err := gguf.Open(out)
	require.NoError(t, err)
	defer g.Close()
	ti, ok := g.Tensor("blk.0.ffn_down_exps.weight")
	require.True(t, ok)
	require.Equal(t, gguf.Q4_0, ti.Type)
	data, err := g.ReadTensor(ti)
	require.NoError(t, err)
	e, ok := m.Lookup("model.layers.0.block_sparse_moe.experts.1.w2.weight")
	require.True(t, ok)
	packed, scales, err := m.Codes(e)
	require.NoError(t, err)
	l := e.Layout
	rowBytes := l.Cols / gguf.QK * 18
	for r := 0; r < l.Rows; r++ {
		row := data[(l.Rows+r)*rowBytes:]
		for b := 0; b < l.Cols/gguf.QK; b++ {
			blk := row[b*18:]
			require.Equal(t, scales[r*l.GroupsPerRow()+b*gguf.QK/l.GroupSize], uint16(blk[0])|uint16(blk[1])<<8, "row %d block %d scale", r, b)
			for i := 0; i < gguf.QK; i++ {
				col := b*gguf.QK + i
				code := int8(packed[r*l.RowBytes()+col/2]>>(4*(col%2))<<4) >> 4
				nib := blk[2+i%16] >> (4 * (i / 16)) & 0x0f
				require.Equal(t, int(code), int(nib)-8, "row %d col %d", r, col)
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	err = x.Write(ctx, m, filepath.Join(dir, "c.gguf"), nil)
	assert.True(t, errors.Is(err, context.Canceled), "%v", err)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, ents, "no partial .gguf, no temporary")
}
