package tokenizer

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

// minillama's tokenizer.model is a real SentencePiece BPE model with byte
// fallback: <unk>, <s>, </s>, then the 256 byte pieces.
func TestMinillamaSentencePiece(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "testdata", "minillama")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.model")); err != nil {
		t.Skipf("minillama not available at %s: %v", dir, err)
	}
	v, err := Load(dir, 2048)
	require.NoError(t, err)
	assert.Equal(t, "llama", v.Model)
	require.Len(t, v.Tokens, 2048)
	assert.Equal(t, []string{"<unk>", "<s>", "</s>", "<0x00>"}, v.Tokens[:4])
	assert.Equal(t, []int32{Unknown, Control, Control, Byte}, v.Types[:4])
	assert.Equal(t, "<0xFF>", v.Tokens[258])
	assert.Equal(t, Normal, v.Types[259])
	assert.Equal(t, [4]int{1, 2, 0, -1}, [4]int{v.BOS, v.EOS, v.UNK, v.PAD})
	require.NotNil(t, v.AddBOS)
	assert.True(t, *v.AddBOS)
	assert.False(t, *v.AddEOS)
	// BPE pieces are scored by merge order: later pieces score lower.
	assert.Greater(t, v.Scores[300], v.Scores[2000])

	_, err = Load(dir, 1000)
	assert.ErrorContains(t, err, "2048 tokens but the model's embedding has 1000 rows")
}

// pb builds protobuf fields by hand, to test the reader on inputs that
// sentencepiece would write.
func pbVarint(b []byte, field int, v uint64) []byte {
	b = binary.AppendUvarint(b, uint64(field<<3|wireVarint))
	return binary.AppendUvarint(b, v)
}

func pbBytes(b []byte, field int, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(field<<3|wireBytes))
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func pbFloat(b []byte, field int, f float32) []byte {
	b = binary.AppendUvarint(b, uint64(field<<3|wire32))
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
}

func TestModelProto(t *testing.T) {
	piece := func(s string, score float32, typ int) []byte {
		var b []byte
		b = pbBytes(b, fieldPiece, []byte(s))
		b = pbFloat(b, fieldScore, score)
		if typ != 0 {
			b = pbVarint(b, fieldType, uint64(typ))
		}
		return b
	}
	var m []byte
	m = pbBytes(m, fieldPieces, piece("<pad>", 0, int(Control)))
	m = pbBytes(m, fieldPieces, piece("▁a", -1.5, 0)) // type absent: NORMAL
	m = pbBytes(m, fieldPieces, piece("<0x41>", 0, int(Byte)))
	var ts []byte
	ts = pbVarint(ts, 3, 2)                        // model_type BPE: skipped
	ts = pbVarint(ts, fieldUnkID, uint64(1<<64-1)) // unk_id -1: int32 as a 10-byte varint
	ts = pbVarint(ts, fieldBosID, 5)
	ts = pbVarint(ts, fieldPadID, 0)
	m = pbBytes(m, fieldTrainerSpec, ts)
	m = pbBytes(m, 3, []byte{0x18, 0x01}) // normalizer_spec: skipped
	v, err := parseModelProto(m)
	require.NoError(t, err)
	assert.Equal(t, []string{"<pad>", "▁a", "<0x41>"}, v.Tokens)
	assert.Equal(t, []float32{0, -1.5, 0}, v.Scores)
	assert.Equal(t, []int32{Control, Normal, Byte}, v.Types)
	assert.Equal(t, [4]int{5, 2, -1, 0}, [4]int{v.BOS, v.EOS, v.UNK, v.PAD})

	_, err = parseModelProto(m[:len(m)-1])
	assert.Error(t, err, "truncated")
	_, err = parseModelProto(pbBytes(nil, fieldPieces, piece("x", 0, 9)))
	assert.ErrorContains(t, err, "piece type 9")
}

// A byte-level BPE tokenizer.json (Llama 3 style): tokens from the vocab
// and added tokens, merges in both spellings, the pre-tokenizer named from
// its regex, special ids from tokenizer_config.json's strings, chat
// templates.
func TestTokenizerJSON(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) { require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644)) }
	write("tokenizer.json", `{
	  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġx": 3}, "merges": [["a", "b"], ["Ġ", "x y"]]},
	  "added_tokens": [{"id": 5, "content": "<|begin_of_text|>", "special": true}, {"id": 6, "content": "<|end|>", "special": true}, {"id": 7, "content": "hi", "special": false}],
	  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
	    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
	    {"type": "ByteLevel", "use_regex": false}]}
	}`)
	write("tokenizer_config.json", `{"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end|>"}, "add_bos_token": true,
	  "chat_template": [{"name": "default", "template": "{{ x }}"}, {"name": "tool_use", "template": "{{ t }}"}]}`)
	write("generation_config.json", `{"eos_token_id": [9, 6], "pad_token_id": 1}`)
	v, err := Load(dir, 10)
	require.NoError(t, err)
	assert.Equal(t, "gpt2", v.Model)
	assert.Equal(t, "llama-bpe", v.Pre)
	assert.Equal(t, []string{"a", "b", "ab", "Ġx", "[PAD4]", "<|begin_of_text|>", "<|end|>", "hi", "[PAD8]", "[PAD9]"}, v.Tokens)
	assert.Equal(t, []int32{Normal, Normal, Normal, Normal, Unused, Control, Control, UserDefined, Unused, Unused}, v.Types)
	assert.Equal(t, []string{"a b", "Ġ x\u0120y"}, v.Merges)
	assert.Equal(t, [4]int{5, 6, -1, 1}, [4]int{v.BOS, v.EOS, v.UNK, v.PAD}, "eos from the string, pad from generation_config")
	assert.Equal(t, "{{ x }}", v.ChatTemplate)
	assert.Equal(t, map[string]string{"tool_use": "{{ t }}"}, v.NamedTemplates)

	// Byte fallback BPE (Llama 2 / Mistral tokenizer.json): the llama model.
	write("tokenizer.json", `{"model": {"type": "BPE", "byte_fallback": true, "vocab": {"<unk>": 0, "<s>": 1, "<0x0A>": 2, "▁a": 3}},
	  "added_tokens": [{"id": 1, "content": "<s>", "special": true}], "pre_tokenizer": null}`)
	write("tokenizer_config.json", `{"chat_template": "{{ y }}", "add_prefix_space": false}`)
	v, err = Load(dir, 4)
	require.NoError(t, err)
	require.NotNil(t, v.AddSpacePrefix)
	assert.False(t, *v.AddSpacePrefix)
	assert.Equal(t, "llama", v.Model)
	assert.Equal(t, []int32{Normal, Control, Byte, Normal}, v.Types)
	assert.Equal(t, "{{ y }}", v.ChatTemplate)

	// Unknown pre-tokenizer: default with a notice.
	write("tokenizer.json", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}}`)
	v, err = Load(dir, 1)
	require.NoError(t, err)
	assert.Equal(t, "default", v.Pre)
	require.Len(t, v.Notices, 1)

	for name, bad := range map[string]string{
		"tokenizer.json":        `{"model": {"type": "Unigram"}}`,
		"tokenizer_config.json": `[1, 2]`,
	} {
		write("tokenizer.json", `{"model": {"type": "BPE", "vocab": {"a": 0}}}`)
		write("tokenizer_config.json", `{}`)
		write(name, bad)
		_, err := Load(dir, 1)
		require.Error(t, err, name)
		assert.True(t, errors.Is(err, quant.ErrInput), name)
		assert.ErrorContains(t, err, filepath.Join(dir, name))
	}
}

func TestNoTokenizer(t *testing.T) {
	_, err := Load(t.TempDir(), 10)
	assert.ErrorIs(t, err, ErrNoTokenizer)
}

// Tokens added on top of a SentencePiece model (tokenizer_config.json's
// added_tokens_decoder, added_tokens.json) take their ids, as in
// convert_hf_to_gguf.py; the rest of the embedding is padding.
func TestSentencePieceAddedTokens(t *testing.T) {
	src := filepath.Join("..", "..", "shared", "testdata", "minillama", "tokenizer.model")
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("minillama not available: %v", err)
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.model"), raw, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"added_tokens_decoder": {
	  "2049": {"content": "<|im_end|>", "special": true}, "1": {"content": "<s>", "special": true}},
	  "eos_token": "<|im_end|>"}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "added_tokens.json"), []byte(`{"hello▁world": 2050, "beyond": 9999}`), 0o644))
	v, err := Load(dir, 2052)
	require.NoError(t, err)
	require.Len(t, v.Tokens, 2052)
	assert.Equal(t, []string{"[PAD2048]", "<|im_end|>", "hello▁world", "[PAD2051]"}, v.Tokens[2048:])
	assert.Equal(t, []int32{Unused, Control, UserDefined, Unused}, v.Types[2048:])
	assert.Equal(t, 2049, v.EOS, "eos from its string in tokenizer_config.json")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "added_tokens.json"), []byte(`[1]`), 0o644))
	_, err = Load(dir, 2052)
	assert.ErrorContains(t, err, filepath.Join(dir, "added_tokens.json"))
}
