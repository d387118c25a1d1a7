package importance

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/safetensors"
)

// tensor is a named F32 tensor for synthetic files.
type tensor struct {
	name  string
	shape []int64
	data  []float32
}

// writeF32 writes tensors as one F32 safetensors file.
func writeF32(t testing.TB, path string, md map[string]string, ts ...tensor) {
	t.Helper()
	var specs []safetensors.Spec
	for _, x := range ts {
		specs = append(specs, safetensors.Spec{Name: x.name, DType: safetensors.F32, Shape: x.shape})
	}
	w, err := safetensors.Create(path, specs, md)
	require.NoError(t, err)
	for _, x := range ts {
		b := make([]byte, 4*len(x.data))
		for i, v := range x.data {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		require.NoError(t, w.Write(x.name, b))
	}
	require.NoError(t, w.Close())
}

// randTensor has normal entries of standard deviation sd, from a fixed seed.
func randTensor(name string, seed uint64, sd float64, shape ...int64) tensor {
	r := rand.New(rand.NewPCG(seed, 7))
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(r.NormFloat64() * sd)
	}
	return tensor{name: name, shape: shape, data: data}
}

// synthCheckpoint writes a small model-like checkpoint: matrices of
// different scales, one with a ragged last group, and a norm vector.
func synthCheckpoint(t testing.TB) (*checkpoint.Checkpoint, []tensor) {
	t.Helper()
	ts := []tensor{
		randTensor("model.embed_tokens.weight", 1, 1.0, 32, 16),
		randTensor("model.layers.0.self_attn.q_proj.weight", 2, 0.2, 16, 16),
		randTensor("model.layers.0.self_attn.k_proj.weight", 3, 0.05, 8, 16),
		randTensor("model.layers.0.mlp.up_proj.weight", 4, 0.1, 24, 16),
		randTensor("model.layers.0.mlp.down_proj.weight", 5, 0.3, 16, 24),
		randTensor("model.norm.weight", 6, 1, 16),
	}
	p := filepath.Join(t.TempDir(), "model.safetensors")
	writeF32(t, p, map[string]string{"format": "pt"}, ts...)
	ck, err := checkpoint.Open(p, checkpoint.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { ck.Close() })
	return ck, ts
}
