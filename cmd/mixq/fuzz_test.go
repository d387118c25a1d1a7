package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

// FuzzTokens fuzzes the --tokens JSON file. readTokens refuses with an
// input error naming the file, or gives sequences that read back
// identically when written as {"sequences": ...}. Short accepted inputs
// then go through `mixq eval` on the synthetic tiny Llama (vocab 256): it
// either succeeds or refuses with exit 2 and no panic trace, so a token
// outside the vocabulary, an empty or one-token sequence, never crashes.
func FuzzTokens(f *testing.F) {
	for _, s := range []string{
		`{"input_tokens":[1,5,9,3]}`,
		`{"sequences":[[1,2,3],[4,5,6,7]]}`,
		`{"input_tokens":[1,2],"sequences":[[3,4,5]]}`,
		`{"input_tokens":[1,256,3]}`,
		`{"input_tokens":[1,-1,3]}`,
		`{"input_tokens":[7]}`,
		`{"sequences":[[]]}`,
		`{"sequences":[null,[1,2]]}`,
		`{"input_tokens":[1e3]}`,
		`{"input_tokens":[1.5]}`,
		`{"input_tokens":[9223372036854775807, 1]}`,
		`{}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	model := filepath.Join(dir, "tiny")
	var out, errb bytes.Buffer
	if code := run([]string{"synth", "--preset", "tiny", "-o", model}, &out, &errb); code != 0 {
		f.Fatalf("synth: exit %d: %s", code, errb.String())
	}
	path := filepath.Join(dir, "tokens.json")
	f.Fuzz(func(t *testing.T, raw []byte) {
		require.NoError(t, os.WriteFile(path, raw, 0o644))
		seqs, err := readTokens(path)
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			require.ErrorContains(t, err, path)
			return
		}
		require.NotEmpty(t, seqs)
		back, err := json.Marshal(map[string]any{"sequences": seqs})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, back, 0o644))
		again, err := readTokens(path)
		require.NoError(t, err)
		require.Equal(t, seqs, again)

		n := 0
		for _, s := range seqs {
			n += len(s)
		}
		if n > 64 {
			return // long inputs only cost time: the checks are per token
		}
		code, _, stderr := runCLI(t, "eval", "--model", model, "--tokens", path)
		require.NotContains(t, stderr, "panic")
		require.NotContains(t, stderr, "goroutine ")
		require.Contains(t, []int{0, 2}, code, stderr)
	})
}
