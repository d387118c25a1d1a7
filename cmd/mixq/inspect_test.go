package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/safetensors"
)

// writeZeros writes a one-tensor safetensors file of the given dtype.
func writeZeros(t *testing.T, path, name string, dt safetensors.DType, shape []int64) {
	t.Helper()
	spec := safetensors.Spec{Name: name, DType: dt, Shape: shape}
	w, err := safetensors.Create(path, []safetensors.Spec{spec}, nil)
	require.NoError(t, err)
	require.NoError(t, w.Write(name, make([]byte, spec.Bytes())))
	require.NoError(t, w.Close())
}

// Issue 9, defect 7: inspect on a dtype it cannot show exits 2 (the input's
// fault), naming the tensor; I8 codes without mixq metadata exited 1.
func TestInspectUnsupportedDTypeExitsTwo(t *testing.T) {
	dir := t.TempDir()
	for _, dt := range []safetensors.DType{safetensors.I8, safetensors.U8, safetensors.F64, safetensors.I64} {
		p := filepath.Join(dir, string(dt)+".safetensors")
		writeZeros(t, p, "codes", dt, []int64{2, 4})
		code, _, stderr := runCLI(t, "inspect", p)
		requireCleanRefusal(t, code, stderr, `"codes"`)
		assert.Contains(t, stderr, string(dt))
	}
}

// Issue 9, defect 9: re-quantizing a mixq output says it is already
// quantized by mixq, not that dtype I8 is unsupported; inspect shows the
// stored dtype and the effective group (a 64-column row with group 128
// has one group of 64).
func TestRequantizeAndInspectWords(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	q := filepath.Join(dir, "q")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q, "--group-size", "128")
	require.Equal(t, 0, code, stderr)

	for _, args := range [][]string{
		{"quantize", q, "-o", filepath.Join(dir, "qq")},
		{"estimate", q},
	} {
		code, _, stderr = runCLI(t, args...)
		requireCleanRefusal(t, code, stderr, "already quantized by mixq")
		assert.NotContains(t, stderr, "is not supported", "%v", args)
		assert.NoDirExists(t, filepath.Join(dir, "qq"))
	}

	code, stdout, stderr := runCLI(t, "inspect", q, "--json")
	require.Equal(t, 0, code, stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	byName := map[string]inspectTensor{}
	for _, tt := range rep.Tensors {
		byName[tt.Name] = tt
	}
	up := byName["model.layers.0.mlp.up_proj.weight"] // [172 64]
	require.Equal(t, "int8", up.Precision)
	assert.Equal(t, safetensors.F32, up.DType, "the original dtype")
	assert.Equal(t, safetensors.I8, up.StoredDType)
	assert.Equal(t, 128, up.GroupSize)
	assert.Equal(t, 64, up.EffectiveGroup)
	down := byName["model.layers.0.mlp.down_proj.weight"] // [64 172]
	assert.Equal(t, 128, down.EffectiveGroup)
	emb := byName["model.embed_tokens.weight"]
	assert.Equal(t, safetensors.F16, emb.StoredDType)
	assert.Zero(t, emb.EffectiveGroup)

	code, stdout, stderr = runCLI(t, "inspect", q)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "STORED")
	assert.Contains(t, stdout, "I8+F16")
	assert.Contains(t, stdout, "64 (of 128)")
}
