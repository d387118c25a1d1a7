package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/qformat"
)

// Issue 11, part 1: the tokenizer and every other non-weight file go into
// quantize and dequantize outputs, the estimate counts them, and weights in
// other formats are listed, not silently dropped.
func TestOutputsCarryTheCheckpointsOtherFiles(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	copyTree(t, stories(t), in)
	extra := map[string]string{
		"tokenizer.json":          `{"model":{"type":"BPE"}}`,
		"tokenizer_config.json":   `{"bos_token":"<s>"}`,
		"special_tokens_map.json": `{}`,
		"generation_config.json":  `{"do_sample":false}`,
		"chat_template.jinja":     "{{ messages }}",
		"README.md":               "# model card",
	}
	for name, body := range extra {
		require.NoError(t, os.WriteFile(filepath.Join(in, name), []byte(body), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(in, "pytorch_model.bin"), []byte("old weights"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(in, "original"), 0o755))
	// A symlinked file, as in a Hugging Face cache snapshot.
	blob := filepath.Join(root, "blob")
	require.NoError(t, os.WriteFile(blob, []byte("merges"), 0o644))
	require.NoError(t, os.Symlink(blob, filepath.Join(in, "merges.txt")))
	extra["merges.txt"] = "merges"

	code, stdout, stderr := runCLI(t, "estimate", in, "--json")
	require.Equal(t, 0, code, stderr)
	var est qformat.Estimate
	require.NoError(t, json.Unmarshal([]byte(stdout), &est))

	q := filepath.Join(root, "q")
	code, _, stderr = runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "not carried into the output: pytorch_model.bin")
	assert.Contains(t, stderr, "not carried into the output: original")
	for name, body := range extra {
		b, err := os.ReadFile(filepath.Join(q, name))
		if assert.NoError(t, err, name) {
			assert.Equal(t, body, string(b), name)
		}
	}
	assert.NoFileExists(t, filepath.Join(q, "pytorch_model.bin"))
	assert.FileExists(t, filepath.Join(q, "reference.json"), "any file that is not weights is carried")
	onDisk, err := mixq.DirBytes(q)
	require.NoError(t, err)
	assert.Equal(t, est.MixedPrecisionBytes, onDisk, "the estimate counts the carried files")

	d := filepath.Join(root, "d")
	code, _, stderr = runCLI(t, "dequantize", q, "-o", d, "--dtype", "bf16")
	require.Equal(t, 0, code, stderr)
	for name, body := range extra {
		b, err := os.ReadFile(filepath.Join(d, name))
		if assert.NoError(t, err, name) {
			assert.Equal(t, body, string(b), name)
		}
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(d, "config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &cfg))
	assert.Equal(t, "bfloat16", cfg["torch_dtype"], "the dtype actually written")
	assert.NotContains(t, cfg, "quantization_config")
}
