//go:build linux

package mixq_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/ggufexport"
	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/synth"
)

// Issue 9 follow-up, D: a quantized checkpoint truncated while dequantize or
// export read it printed only "memory fault reading a mapped file", naming
// neither the file nor the tensor (root.go's last-resort catch). Each read
// of the mapping, kept data as well as codes and scales, must give an input
// error naming both, and leave no output behind.
func TestQuantizedInputTruncatedWhileReadIsNamed(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	p, err := synth.Lookup("tiny")
	require.NoError(t, err)
	require.NoError(t, synth.Write(in, synth.Options{Preset: p, Seed: 1}))
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	require.NoError(t, err)
	q := filepath.Join(dir, "q")
	_, err = mixq.Quantize(context.Background(), ck, plan, q, mixq.Options{})
	require.NoError(t, err)
	require.NoError(t, ck.Close())

	// open copies q, opens the copy and truncates its weights under the
	// mapping: the header stays, the data goes, so every tensor past the
	// first page of data faults when read. It returns the model and the
	// truncated file.
	open := func(t *testing.T) (*qformat.Model, string) {
		t.Helper()
		c := filepath.Join(t.TempDir(), "q")
		require.NoError(t, os.CopyFS(c, os.DirFS(q)))
		m, err := qformat.Open(c)
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		shard := filepath.Join(c, "model.safetensors")
		f, err := safetensors.Open(shard)
		require.NoError(t, err)
		start := f.Header().DataStart
		require.NoError(t, f.Close())
		require.NoError(t, os.Truncate(shard, start))
		return m, shard
	}
	named := func(t *testing.T, err error, shard, tensor string) {
		t.Helper()
		require.Error(t, err)
		assert.ErrorIs(t, err, fault.ErrFault)
		assert.ErrorIs(t, err, quant.ErrInput)
		assert.Contains(t, err.Error(), shard, "names the file")
		assert.Contains(t, err.Error(), `"`+tensor+`"`, "names the tensor")
	}

	t.Run("codes", func(t *testing.T) {
		m, shard := open(t)
		e, ok := m.Lookup("model.layers.1.mlp.down_proj.weight")
		require.True(t, ok)
		_, _, err := m.Codes(e)
		named(t, err, shard, e.Name)
	})
	t.Run("dequantize", func(t *testing.T) {
		m, shard := open(t)
		out := filepath.Join(t.TempDir(), "deq")
		err := mixq.Dequantize(context.Background(), m, out, safetensors.F32, mixq.Options{})
		named(t, err, shard, "model.embed_tokens.weight")
		assert.NoDirExists(t, out)
	})
	t.Run("export gguf", func(t *testing.T) {
		m, shard := open(t)
		x, err := ggufexport.Plan(m.Checkpoint.Config, ggufexport.Sources(m), ggufexport.Options{Name: "q", NoVocab: true})
		require.NoError(t, err)
		out := filepath.Join(t.TempDir(), "x.gguf")
		err = x.Write(context.Background(), m, out, nil)
		named(t, err, shard, "model.embed_tokens.weight")
		assert.NoFileExists(t, out)
	})
}
