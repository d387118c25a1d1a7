package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/gguf"
)

// llama.cpp ships the Llama 3 vocabulary as convert_hf_to_gguf.py wrote it
// from the real tokenizer.json (models/ggml-vocab-llama-bpe.gguf). Written
// back as a tokenizer.json (vocab, merges as pairs, the special tokens as
// added tokens, Llama 3's split regex), it must read as the same
// vocabulary: tokens, types, merges, pre-tokenizer and special ids.
func TestLlama3VocabRoundTrip(t *testing.T) {
	root := os.Getenv("MIXQ_LLAMA_CPP")
	if root == "" {
		home, _ := os.UserHomeDir()
		root = filepath.Join(home, ".cache", "mixq", "llama.cpp")
	}
	path := filepath.Join(root, "models", "ggml-vocab-llama-bpe.gguf")
	g, err := gguf.Open(path)
	if err != nil {
		t.Skipf("llama.cpp's Llama 3 vocabulary not available (scripts/install-gguf-py.sh): %v", err)
	}
	defer g.Close()
	get := func(k string) any {
		v, ok := g.Get(k)
		require.True(t, ok, k)
		return v
	}
	tokens := get("tokenizer.ggml.tokens").([]string)
	types := get("tokenizer.ggml.token_type").([]int32)
	merges := get("tokenizer.ggml.merges").([]string)
	bos, eos := int(get("tokenizer.ggml.bos_token_id").(uint32)), int(get("tokenizer.ggml.eos_token_id").(uint32))

	vocab := map[string]int{}
	type added struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var specials []added
	for i, tok := range tokens {
		if types[i] == Control {
			specials = append(specials, added{i, tok, true})
		} else {
			vocab[tok] = i
		}
	}
	pairs := make([][2]string, len(merges))
	for i, m := range merges {
		var a, b string
		for j := 0; j < len(m); j++ {
			if m[j] == ' ' {
				a, b = m[:j], m[j+1:]
				break
			}
		}
		pairs[i] = [2]string{a, b}
	}
	tj := map[string]any{
		"model":        map[string]any{"type": "BPE", "vocab": vocab, "merges": pairs},
		"added_tokens": specials,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]string{"Regex": `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`}},
			map[string]any{"type": "ByteLevel", "use_regex": false},
		}},
	}
	dir := t.TempDir()
	b, err := json.Marshal(tj)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644))
	tc, _ := json.Marshal(map[string]string{"bos_token": tokens[bos], "eos_token": tokens[eos]})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tc, 0o644))

	v, err := Load(dir, len(tokens))
	require.NoError(t, err)
	assert.Equal(t, get("tokenizer.ggml.model"), v.Model)
	assert.Equal(t, get("tokenizer.ggml.pre"), v.Pre)
	assert.Equal(t, tokens, v.Tokens)
	assert.Equal(t, types, v.Types)
	assert.Equal(t, merges, v.Merges)
	assert.Equal(t, [2]int{bos, eos}, [2]int{v.BOS, v.EOS})
}
