package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 9 follow-up, B: quantize accepted config.json values that eval
// refuses (head_dim 2^62, num_hidden_layers 0 or 2^40, rms_norm_eps 0,
// rope_theta 0, vocab_size 1) with exit 0 and wrote them into an output
// eval then refused. For an architecture package model runs, quantize and
// estimate apply eval's checks: exit 2 naming the field, nothing written.
// A config.json of an architecture mixq does not run is not refused.
func TestQuantizeRefusesHostileConfig(t *testing.T) {
	tiny := tinyLlama(t)
	for _, tc := range []struct {
		key   string
		value any
		want  string // in the message; the key when empty
	}{
		{"head_dim", int64(1) << 62, ""},
		{"num_hidden_layers", 0, ""},
		{"num_hidden_layers", int64(1) << 40, ""},
		{"num_hidden_layers", 3, ""}, // within the bounds, the checkpoint has 2
		{"rms_norm_eps", 0, ""},
		{"rope_theta", 0, ""},
		{"vocab_size", 1, "vocabulary"}, // bos_token_id 1 is outside it
		{"head_dim", 32, ""},            // contradicted by q_proj
	} {
		dir := hostileCopy(t, tiny, tc.key, tc.value)
		want := tc.want
		if want == "" {
			want = tc.key
		}
		out := filepath.Join(t.TempDir(), "q")
		code, _, stderr := runCLI(t, "quantize", dir, "-o", out)
		requireCleanRefusal(t, code, stderr, want)
		assert.NoDirExists(t, out, "%s %v", tc.key, tc.value)
		code, stdout, stderr := runCLI(t, "estimate", dir)
		requireCleanRefusal(t, code, stderr, want)
		assert.Empty(t, stdout, "%s %v", tc.key, tc.value)
	}

	// A vocab_size contradicted by the embedding, with a valid bos_token_id.
	dir := hostileCopy(t, tiny, "vocab_size", 1)
	setConfig(t, dir, "bos_token_id", 0)
	code, _, stderr := runCLI(t, "quantize", dir, "-o", filepath.Join(t.TempDir(), "q"))
	requireCleanRefusal(t, code, stderr, "vocab_size 1")
	assert.Contains(t, stderr, "model.embed_tokens.weight")

	// Another architecture (or an unknown one) is quantized as it is: mixq
	// quantizes any safetensors checkpoint, whatever its config says.
	for _, arch := range []string{"GPT2LMHeadModel", "SomethingNewForCausalLM"} {
		dir := hostileCopy(t, tiny, "architectures", []string{arch})
		setConfig(t, dir, "num_hidden_layers", 0)
		out := filepath.Join(t.TempDir(), "q")
		code, _, stderr := runCLI(t, "quantize", dir, "-o", out)
		require.Equal(t, 0, code, "%s: %s", arch, stderr)
		assert.FileExists(t, filepath.Join(out, "model.safetensors"))
	}
}

// setConfig sets one field of dir's config.json.
func setConfig(t *testing.T, dir, key string, value any) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	cfg := map[string]any{}
	require.NoError(t, json.Unmarshal(raw, &cfg))
	cfg[key] = value
	raw, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, raw, 0o644))
}
