package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 11, part 4: inspect reads all three formats, with the effective
// group of rows shorter than a group (stories260K's rows are 64 wide, the
// group 128).
func TestInspectReadsEveryFormat(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	q, g, ct := filepath.Join(dir, "q"), filepath.Join(dir, "m.gguf"), filepath.Join(dir, "ct")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q, "--rule", "mlp=int4")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "export", q, "-o", g, "--format", "gguf", "--no-vocab")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "export", q, "-o", ct, "--format", "compressed-tensors")
	require.Equal(t, 0, code, stderr)

	read := func(p string) inspectReport {
		code, stdout, stderr := runCLI(t, "inspect", p, "--json")
		require.Equal(t, 0, code, stderr)
		var rep inspectReport
		require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
		return rep
	}
	count := func(rep inspectReport) map[string]int {
		n := map[string]int{}
		for _, t := range rep.Tensors {
			// Rows that are not whole 32-blocks (the down projection's 172)
			// go to F16 in a GGUF and stay unpacked in compressed-tensors.
			if (t.Precision == "int8" || t.Precision == "int4") && t.Shape[len(t.Shape)-1]%32 == 0 {
				n[t.Precision]++
			}
		}
		return n
	}
	mq, gg, cc := read(q), read(g), read(ct)
	assert.Equal(t, "mixq/1", mq.Format)
	assert.Contains(t, gg.Format, "gguf v3, architecture llama")
	assert.Equal(t, "compressed-tensors pack-quantized", cc.Format)
	assert.NotEmpty(t, count(mq)["int4"])
	assert.Equal(t, count(mq), count(gg), "every quantized matrix is a Q4_0 or Q8_0 tensor")
	assert.Equal(t, count(mq), count(cc), "every quantized matrix is packed")
	assert.Equal(t, mq.Parameters, gg.Parameters)
	assert.Equal(t, mq.Parameters, cc.Parameters)
	for _, rep := range []inspectReport{mq, cc} {
		for _, tt := range rep.Tensors {
			if tt.Precision == "int4" && tt.Shape[1] == 64 {
				assert.Equal(t, 64, tt.EffectiveGroup, "%s: a 64-wide row with group 128 is group 64", tt.Name)
			}
		}
	}
	for _, tt := range gg.Tensors {
		if tt.Precision == "int4" {
			assert.Equal(t, 32, tt.EffectiveGroup, "Q4_0 blocks are 32 wide")
			assert.InDelta(t, 4.5, tt.BitsPerW, 1e-9)
		}
	}
}
