package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tinyLlama writes the synthetic 2-layer Llama (vocab 256,
// max_position_embeddings 4096) into a fresh directory.
func tinyLlama(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny")
	code, _, stderr := runCLI(t, "synth", "--preset", "tiny", "-o", dir)
	require.Equal(t, 0, code, stderr)
	return dir
}

func writeTokens(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// requireRefused checks a clean refusal of the user's input: exit 2 with
// the reason on stderr and no panic trace (a panic exits 2 too).
func requireRefused(t *testing.T, code int, stderr string, want ...string) {
	t.Helper()
	assert.Equal(t, 2, code, stderr)
	assert.NotContains(t, stderr, "panic")
	assert.NotContains(t, stderr, "goroutine ")
	for _, w := range want {
		assert.Contains(t, stderr, w)
	}
}

// TestBadTokenSequencesExit2: issue 9, defect 7. A token outside the
// vocabulary, a one-token sequence for eval, and a sequence longer than
// max_position_embeddings are the user's input: exit 2, naming the
// sequence, the position and the value, refused before any forward pass
// runs. A one-token sequence is fine for calibration.
func TestBadTokenSequencesExit2(t *testing.T) {
	m := tinyLlama(t)
	long := make([]int, 4097)
	for _, tc := range []struct {
		name   string
		tokens any
		want   []string
	}{
		{"outside the vocabulary", map[string]any{"sequences": [][]int{{1, 2, 3}, {1, 5, 256, 7}}}, []string{"sequence 1 position 2: token 256 is outside the vocabulary [0, 256)"}},
		{"negative", map[string]any{"input_tokens": []int{1, -1}}, []string{"sequence 0 position 1: token -1"}},
		{"one token", map[string]any{"sequences": [][]int{{1, 2}, {9}}}, []string{"sequence 1 has 1 tokens; need at least 2"}},
		{"longer than max_position_embeddings", map[string]any{"input_tokens": long}, []string{"sequence 0 has 4097 tokens, more than the model's max_position_embeddings 4096"}},
		{"empty", map[string]any{"sequences": [][]int{}}, []string{"no input_tokens or sequences"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokens := writeTokens(t, tc.tokens)
			start := time.Now()
			code, _, stderr := runCLI(t, "eval", "--model", m, "--tokens", tokens, "--backend", "cpu")
			requireRefused(t, code, stderr, append(tc.want, "tokens.json")...)
			assert.Less(t, time.Since(start), 5*time.Second, "refused before running")
		})
	}

	// Calibration needs one token, not two; the other refusals are the same.
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "calibrate", m, "--tokens", writeTokens(t, map[string]any{"sequences": [][]int{{9}}}), "--backend", "cpu", "-o", filepath.Join(dir, "a.safetensors"))
	assert.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "calibrate", m, "--tokens", writeTokens(t, map[string]any{"sequences": [][]int{{9, 300}}}), "--backend", "cpu", "-o", filepath.Join(dir, "b.safetensors"))
	requireRefused(t, code, stderr, "token 300 is outside the vocabulary")
	assert.NoFileExists(t, filepath.Join(dir, "b.safetensors"))
	code, _, stderr = runCLI(t, "estimate", m, "--policy", "dynamic", "--calib-tokens", writeTokens(t, map[string]any{"input_tokens": long}), "--backend", "cpu")
	requireRefused(t, code, stderr, "max_position_embeddings 4096")

	// Sampling past max_position_embeddings is refused too.
	code, _, stderr = runCLI(t, "eval", "--model", m, "--sample", "1", "--seq-len", "5000", "--backend", "cpu")
	requireRefused(t, code, stderr, "length 5000 is more than the model's max_position_embeddings 4096")
}

// TestSizeTargetFlags: issue 9, defect 9. --target-ratio is the one name
// of the size target (--target, its old name, still works in estimate),
// a ratio below 1 is an error, and flags the chosen policy ignores are
// warned about.
func TestSizeTargetFlags(t *testing.T) {
	m := tinyLlama(t)
	target := func(args ...string) (float64, string) {
		t.Helper()
		code, stdout, stderr := runCLI(t, append([]string{"estimate", m, "--json", "--backend", "cpu"}, args...)...)
		require.Equal(t, 0, code, stderr)
		var est struct {
			Target float64 `json:"target_compression"`
		}
		require.NoError(t, json.Unmarshal([]byte(stdout), &est))
		return est.Target, stderr
	}
	got, stderr := target("--target-ratio", "4")
	assert.Equal(t, 4.0, got)
	assert.NotContains(t, stderr, "warning", "estimate compares with the target under every policy")
	got, _ = target("--target", "4")
	assert.Equal(t, 4.0, got, "--target is the old name")
	got, _ = target("--target", "4", "--target-ratio", "4")
	assert.Equal(t, 4.0, got)
	got, _ = target()
	assert.Equal(t, 6.0, got, "the default target")
	got, stderr = target("--policy", "dynamic", "--target-ratio", "5")
	assert.Equal(t, 5.0, got)
	assert.NotContains(t, stderr, "warning")
	got, _ = target("--policy", "budget", "--target-bpw", "8")
	assert.Equal(t, 4.0, got, "a bits-per-weight target is compared as 32/B")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"estimate", m, "--target-ratio", "0.5"}, "--target-ratio 0.5: want a compression ratio versus FP32 of at least 1"},
		{[]string{"estimate", m, "--target", "0.5"}, "--target-ratio 0.5"},
		{[]string{"estimate", m, "--target", "4", "--target-ratio", "5"}, "give one"},
		{[]string{"estimate", m, "--policy", "budget", "--target-ratio", "0.5"}, "at least 1"},
		{[]string{"estimate", m, "--policy", "budget", "--target-bpw", "33"}, "--target-bpw 33"},
		{[]string{"estimate", m, "--policy", "budget", "--target-ratio", "6", "--target-bpw", "4"}, "not both"},
		{[]string{"estimate", m, "--policy", "budget"}, "needs --target-ratio R or --target-bpw B"},
		{[]string{"estimate", m, "--policy", "dynamic", "--high-ratio", "0.8", "--low-ratio", "0.5"}, "sum to at most 1"},
		{[]string{"quantize", m, "-o", filepath.Join(t.TempDir(), "q"), "--target-ratio", "6"}, "need --policy budget"},
	} {
		code, _, stderr := runCLI(t, append(tc.args, "--backend", "cpu")...)
		requireRefused(t, code, stderr, tc.want)
	}

	// Flags the chosen policy does not read are warned about, by name.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--policy", "static", "--high-ratio", "0.3", "--grads", "g.safetensors", "--target-ratio", "6"}, []string{
			"warning: --high-ratio ignored", "warning: --grads ignored", "warning: --target-ratio ignored: --policy static does not aim at a size"}},
		{[]string{"--policy", "dynamic", "--target-bpw", "5", "--calib-seed", "3"}, []string{
			"warning: --target-bpw ignored: --policy dynamic does not aim at a size", "warning: --calib-seed ignored without --calib-sample"}},
		{[]string{"--policy", "budget", "--target-ratio", "3", "--low-ratio", "0.1"}, []string{"warning: --low-ratio ignored: only --policy dynamic reads it"}},
	} {
		code, _, stderr := runCLI(t, append([]string{"quantize", m, "-o", filepath.Join(t.TempDir(), "q"), "--backend", "cpu"}, tc.args...)...)
		require.Equal(t, 0, code, stderr)
		for _, w := range tc.want {
			assert.Contains(t, stderr, w)
		}
	}
	code, _, stderr := runCLI(t, "quantize", m, "-o", filepath.Join(t.TempDir(), "q"), "--backend", "cpu")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "warning", "no warning without such flags")

	// Calibration flags feed --rounding under every policy: not ignored
	// there, but ignored by a static estimate, which has no rounding.
	calib := writeTokens(t, map[string]any{"sequences": [][]int{{1, 2, 3, 4, 5, 6, 7, 8}}})
	code, _, stderr = runCLI(t, "quantize", m, "-o", filepath.Join(t.TempDir(), "q"), "--backend", "cpu", "--policy", "static", "--calib-tokens", calib)
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "ignored")
	code, _, stderr = runCLI(t, "quantize", m, "-o", filepath.Join(t.TempDir(), "q"), "--backend", "cpu", "--rounding", "rtn", "--calib-tokens", calib)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "warning: --calib-tokens ignored")
	code, _, stderr = runCLI(t, "estimate", m, "--backend", "cpu", "--calib-sample", "2")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "warning: --calib-sample ignored")
}
