package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/safetensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// poke overwrites element i of tensor name in the shard at path with the
// little-endian 16-bit value v (the tensor must be F16 or BF16).
func poke(t *testing.T, path, name string, i int64, v uint16) {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	ti, ok := f.Header().Lookup(name)
	off := f.Header().DataStart + ti.Begin + 2*i
	require.NoError(t, f.Close())
	require.True(t, ok, name)
	require.Equal(t, 2, ti.DType.Size(), "%s is %s", name, ti.DType)
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fh.WriteAt(binary.LittleEndian.AppendUint16(nil, v), off)
	require.NoError(t, err)
	require.NoError(t, fh.Close())
}

// Issue 9 follow-up: NaN or ±Inf in a tensor a mixq output keeps in
// floating point (the F16 embedding, a BF16 norm) passed through dequantize
// and export with exit 0, although eval refuses them and quantize never
// writes them. Both must exit 2 naming the tensor and the element, and
// leave no output.
func TestNonFiniteKeptTensorsAreRefused(t *testing.T) {
	tiny := tinyLlama(t)
	for _, tc := range []struct {
		name, tensor string
		index        int64
		bits         uint16
		want         string
	}{
		{"f16 embedding +Inf", "model.embed_tokens.weight", 70, 0x7c00, "+Inf at index 70"},
		{"bf16 norm NaN", "model.layers.1.post_attention_layernorm.weight", 3, 0x7fc0, "NaN at index 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q := filepath.Join(dir, "q")
			code, _, stderr := runCLI(t, "quantize", tiny, "-o", q)
			require.Equal(t, 0, code, stderr)
			shard := filepath.Join(q, "model.safetensors")
			poke(t, shard, tc.tensor, tc.index, tc.bits)

			for _, args := range [][]string{
				{"dequantize", q, "-o", filepath.Join(dir, "deq")},
				{"export", q, "-o", filepath.Join(dir, "x.gguf"), "--format", "gguf", "--no-vocab"},
				{"export", q, "-o", filepath.Join(dir, "ct"), "--format", "compressed-tensors"},
			} {
				code, _, stderr := runCLI(t, args...)
				requireRefused(t, code, stderr, shard, tc.tensor, tc.want)
				assert.NoFileExists(t, args[3], args[0])
				assert.NoDirExists(t, args[3], args[0])
			}
			left, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, left, 1, "only q is left, no temporary: %v", left)
		})
	}
}
