package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/safetensors"
)

// hostileCopy writes stories260K's weights beside its config.json with key
// set to value, and returns the directory.
func hostileCopy(t *testing.T, src, key string, value any) string {
	t.Helper()
	dir := t.TempDir()
	w, err := os.ReadFile(filepath.Join(src, "model.safetensors"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors"), w, 0o644))
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	require.NoError(t, err)
	cfg := map[string]any{}
	require.NoError(t, json.Unmarshal(raw, &cfg))
	cfg[key] = value
	raw, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644))
	return dir
}

// requireCleanRefusal checks an exit 2 that is a refusal, not a Go panic
// (which exits 2 as well), and that the message names the field.
func requireCleanRefusal(t *testing.T, code int, stderr, field string) {
	t.Helper()
	require.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, field)
	assert.NotContains(t, stderr, "panic")
	assert.NotContains(t, stderr, "goroutine ")
}

// Issue 9, defect 2: head_dim 2^62 panicked in InvFreq's makeslice,
// head_dim 2^40 and num_hidden_layers 2^40 ran out of memory, head_dim 2^31
// took 129 s and 4 GB before being refused. Each must now be refused with
// exit 2, naming the field, before anything is allocated from it. The
// elapsed time is logged (speed is not asserted in tests); on today's code
// these runs crash the test binary or exhaust memory.
func TestEvalRefusesHostileConfig(t *testing.T) {
	in := stories(t)
	tokens := filepath.Join(in, "reference.json")
	for _, tc := range []struct {
		key   string
		value any
	}{
		{"head_dim", int64(1) << 62},
		{"head_dim", int64(1) << 40},
		{"head_dim", int64(1) << 31},
		{"head_dim", 1 << 20}, // within the bounds, contradicted by q_proj
		{"num_hidden_layers", int64(1) << 40},
		{"num_hidden_layers", 60000}, // within the bounds, the checkpoint has 5
		{"intermediate_size", int64(1) << 40},
		{"vocab_size", 1 << 24},
		{"num_key_value_heads", int64(1) << 40},
		{"rope_theta", 1e-300},
		{"max_position_embeddings", -1},
	} {
		dir := hostileCopy(t, in, tc.key, tc.value)
		start := time.Now()
		code, _, stderr := runCLI(t, "eval", "--model", dir, "--tokens", tokens)
		t.Logf("%s %v: exit %d in %v", tc.key, tc.value, code, time.Since(start))
		requireCleanRefusal(t, code, stderr, tc.key)
	}

	// The quantized side of eval reads its own config.json the same way.
	q := filepath.Join(t.TempDir(), "q")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)
	raw, err := os.ReadFile(filepath.Join(q, "config.json"))
	require.NoError(t, err)
	cfg := map[string]any{}
	require.NoError(t, json.Unmarshal(raw, &cfg))
	cfg["head_dim"] = int64(1) << 62
	raw, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(q, "config.json"), raw, 0o644))
	code, _, stderr = runCLI(t, "eval", "--model", in, "--quantized", q, "--tokens", tokens)
	requireCleanRefusal(t, code, stderr, "head_dim")
}

// Issue 9, defect 6: a NaN scale in a mixq output made eval report
// perplexity NaN with exit 0. It must exit 2 naming the tensor, and
// dequantize must refuse it without leaving an output.
func TestEvalRefusesCorruptQuantizedScales(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	q := filepath.Join(dir, "q")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)

	path := filepath.Join(q, "model.safetensors")
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	var victim string
	var off int64
	for _, ti := range f.Header().Tensors {
		if strings.HasSuffix(ti.Name, ".scales") {
			victim, off = strings.TrimSuffix(ti.Name, ".scales"), f.Header().DataStart+ti.Begin
			break
		}
	}
	require.NoError(t, f.Close())
	require.NotEmpty(t, victim, "the default policy quantizes some matrix")
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fh.WriteAt([]byte{0x00, 0x7e}, off) // f16 NaN, little-endian
	require.NoError(t, err)
	require.NoError(t, fh.Close())

	code, stdout, stderr := runCLI(t, "eval", "--model", in, "--quantized", q, "--tokens", filepath.Join(in, "reference.json"))
	requireCleanRefusal(t, code, stderr, victim)
	assert.Contains(t, stderr, "is NaN")
	assert.NotContains(t, stdout, "perplexity")

	deq := filepath.Join(dir, "deq")
	code, _, stderr = runCLI(t, "dequantize", q, "-o", deq)
	requireCleanRefusal(t, code, stderr, victim)
	assert.NoDirExists(t, deq)
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, left, 1, "no temporary is left beside q: %v", left)
}
