package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/mixq/mixq/internal/infile"
	"github.com/mixq/mixq/quant"
)

// Token types, the SentencePiece numbering that GGUF also uses.
const (
	Normal      int32 = 1
	Unknown     int32 = 2
	Control     int32 = 3
	UserDefined int32 = 4
	Unused      int32 = 5
	Byte        int32 = 6
)

// ErrNoTokenizer is returned when a directory has no tokenizer file.
var ErrNoTokenizer = errors.New("no tokenizer.model or tokenizer.json")

// Vocab is a vocabulary as GGUF describes it.
type Vocab struct {
	// Model is "llama" (SentencePiece) or "gpt2" (byte-level BPE).
	Model string
	// Pre is the pre-tokenizer name ("default", "llama-bpe", ...).
	Pre    string
	Tokens []string
	Scores []float32
	Types  []int32
	// Merges are "a b" pairs, for gpt2.
	Merges []string
	// Special token ids, -1 when unknown.
	BOS, EOS, UNK, PAD int
	// AddBOS and AddEOS are nil when the files do not say; AddSpacePrefix
	// is tokenizer_config.json's add_prefix_space, nil when absent.
	AddBOS, AddEOS, AddSpacePrefix *bool
	// ChatTemplate is the default template; NamedTemplates the others.
	ChatTemplate   string
	NamedTemplates map[string]string
	// Source is the file the tokens came from; Notices are things the
	// caller should tell the user.
	Source  string
	Notices []string
}

// maxFile bounds a tokenizer file: the largest real tokenizer.json files
// (256k-token vocabularies) are tens of MB.
const maxFile = 256 << 20

// readFile reads a tokenizer file, refusing a FIFO (which would block the
// read forever), a device (which may never end) or a file over maxFile.
func readFile(path string) ([]byte, error) {
	return infile.ReadFile(path, maxFile, "tokenizer file")
}

func inputErr(path string, err error) error {
	return quant.InputError(fmt.Errorf("%s: %w", path, err))
}

// Load reads the tokenizer of the checkpoint directory dir. vocabSize is
// the number of rows of the token embedding: the vocabulary is padded to it
// with unused "[PADn]" tokens (as convert_hf_to_gguf.py does), and a
// tokenizer with more tokens is an error.
func Load(dir string, vocabSize int) (*Vocab, error) {
	var v *Vocab
	var err error
	spm := filepath.Join(dir, "tokenizer.model")
	tj := filepath.Join(dir, "tokenizer.json")
	switch {
	case exists(spm):
		if v, err = loadSentencePiece(spm); err == nil {
			err = v.addedTokens(dir, vocabSize)
		}
	case exists(tj):
		v, err = loadTokenizerJSON(tj, vocabSize)
	default:
		return nil, ErrNoTokenizer
	}
	if err != nil {
		return nil, err
	}
	if err := v.fit(vocabSize); err != nil {
		return nil, err
	}
	if err := v.special(dir); err != nil {
		return nil, err
	}
	return v, nil
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// addedTokens applies added_tokens.json and tokenizer_config.json's
// added_tokens_decoder to a SentencePiece vocabulary, as
// convert_hf_to_gguf.py does: score -1000, CONTROL when special, else
// USER_DEFINED. Ids at or beyond n (the embedding's rows) are ignored.
func (v *Vocab) addedTokens(dir string, n int) error {
	put := func(id int, text string, special bool) {
		// Without an embedding size, a far-off id is not worth padding to.
		if id < 0 || (n > 0 && id >= n) || (n <= 0 && id >= len(v.Tokens)+1<<16) {
			return
		}
		for len(v.Tokens) <= id {
			v.Tokens = append(v.Tokens, fmt.Sprintf("[PAD%d]", len(v.Tokens)))
			v.Scores = append(v.Scores, -1000)
			v.Types = append(v.Types, Unused)
		}
		v.Tokens[id], v.Scores[id], v.Types[id] = text, -1000, UserDefined
		if special {
			v.Types[id] = Control
		}
	}
	atPath := filepath.Join(dir, "added_tokens.json")
	raw, err := readFile(atPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		var m map[string]int
		if err := json.Unmarshal(raw, &m); err != nil {
			return inputErr(atPath, fmt.Errorf("want an object of token ids: %v", err))
		}
		for text, id := range m {
			put(id, text, false)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return inputErr(atPath, err)
	}
	tcPath := filepath.Join(dir, "tokenizer_config.json")
	tc, err := readJSON(tcPath)
	if err != nil {
		return err
	}
	if raw, ok := tc["added_tokens_decoder"]; ok {
		var dec map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		}
		if err := json.Unmarshal(raw, &dec); err != nil {
			return inputErr(tcPath, fmt.Errorf("added_tokens_decoder: %v", err))
		}
		ids := make([]int, 0, len(dec))
		for k := range dec {
			id, err := strconv.Atoi(k)
			if err != nil {
				return inputErr(tcPath, fmt.Errorf("added_tokens_decoder: id %q is not a number", k))
			}
			ids = append(ids, id)
		}
		sort.Ints(ids)
		for _, id := range ids {
			t := dec[strconv.Itoa(id)]
			text := t.Content
			if !t.Special {
				text = strings.ReplaceAll(text, "\u2581", " ") // pre-normalised spaces, as convert does
			}
			put(id, text, t.Special)
		}
	}
	return nil
}

// fit pads the vocabulary to n tokens.
func (v *Vocab) fit(n int) error {
	if n <= 0 {
		return nil
	}
	if len(v.Tokens) > n {
		return inputErr(v.Source, fmt.Errorf("has %d tokens but the model's embedding has %d rows", len(v.Tokens), n))
	}
	for i := len(v.Tokens); i < n; i++ {
		v.Tokens = append(v.Tokens, fmt.Sprintf("[PAD%d]", i))
		v.Scores = append(v.Scores, -1000)
		v.Types = append(v.Types, Unused)
	}
	return nil
}

// readJSON reads an optional JSON object file; absent is (nil, nil).
func readJSON(path string) (map[string]json.RawMessage, error) {
	raw, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, inputErr(path, fmt.Errorf("not a JSON object: %v", err))
	}
	return m, nil
}

// tokenText is a tokenizer_config.json token entry: a string or
// {"content": ...}.
func tokenText(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Content != "" {
		return o.Content, true
	}
	return "", false
}

// tokenID is a config.json id: an integer, or a list whose first element
// is used (generation_config.json lists several EOS ids).
func tokenID(raw json.RawMessage) (int, bool) {
	var i int
	if json.Unmarshal(raw, &i) == nil {
		return i, true
	}
	var l []int
	if json.Unmarshal(raw, &l) == nil && len(l) > 0 {
		return l[0], true
	}
	return 0, false
}

// special fills the special ids, add flags and chat templates.
func (v *Vocab) special(dir string) error {
	tcPath := filepath.Join(dir, "tokenizer_config.json")
	tc, err := readJSON(tcPath)
	if err != nil {
		return err
	}
	cfg, err := readJSON(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	gen, err := readJSON(filepath.Join(dir, "generation_config.json"))
	if err != nil {
		return err
	}
	byText := map[string]int{}
	for i, t := range v.Tokens {
		if _, dup := byText[t]; !dup {
			byText[t] = i
		}
	}
	ids := map[string]*int{"bos": &v.BOS, "eos": &v.EOS, "unk": &v.UNK, "pad": &v.PAD}
	for _, typ := range []string{"bos", "eos", "unk", "pad"} {
		// The tokenizer's own ids (SentencePiece's trainer spec) are the
		// fallback; the HF files win, as in gguf-py's SpecialVocab.
		p := ids[typ]
		fallback := *p
		*p = -1
		if s, ok := tokenText(tc[typ+"_token"]); ok {
			if id, ok := byText[s]; ok {
				*p = id
				continue
			}
		}
		for _, m := range []map[string]json.RawMessage{cfg, gen} {
			if id, ok := tokenID(m[typ+"_token_id"]); ok && id >= 0 && id < len(v.Tokens) {
				*p = id
				break
			}
		}
		if *p < 0 && fallback < len(v.Tokens) {
			*p = fallback
		}
	}
	flag := func(key string) *bool {
		var b bool
		if raw, ok := tc[key]; ok && json.Unmarshal(raw, &b) == nil {
			return &b
		}
		return nil
	}
	v.AddBOS, v.AddEOS, v.AddSpacePrefix = flag("add_bos_token"), flag("add_eos_token"), flag("add_prefix_space")
	return v.templates(dir, tc, tcPath)
}

func (v *Vocab) templates(dir string, tc map[string]json.RawMessage, tcPath string) error {
	raw, ok := tc["chat_template"]
	if !ok || string(raw) == "null" {
		b, err := readFile(filepath.Join(dir, "chat_template.jinja"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err == nil {
			v.ChatTemplate = string(b)
			return nil
		}
		ct, err := readJSON(filepath.Join(dir, "chat_template.json"))
		if err != nil {
			return err
		}
		if raw, ok = ct["chat_template"]; !ok {
			return nil
		}
		tcPath = filepath.Join(dir, "chat_template.json")
	}
	if json.Unmarshal(raw, &v.ChatTemplate) == nil {
		return nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return inputErr(tcPath, errors.New("chat_template is neither a string nor a list of {name, template}"))
	}
	for _, t := range named {
		if t.Name == "default" {
			v.ChatTemplate = t.Template
			continue
		}
		if v.NamedTemplates == nil {
			v.NamedTemplates = map[string]string{}
		}
		v.NamedTemplates[t.Name] = t.Template
	}
	return nil
}

// tokenizerJSON is the part of tokenizer.json that is read.
type tokenizerJSON struct {
	Model struct {
		Type         string          `json:"type"`
		Vocab        map[string]int  `json:"vocab"`
		Merges       json.RawMessage `json:"merges"`
		ByteFallback bool            `json:"byte_fallback"`
	} `json:"model"`
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
}

var byteToken = regexp.MustCompile(`^<0x[0-9A-F]{2}>$`)

// loadTokenizerJSON reads tokenizer.json; limit > 0 bounds the ids (the
// embedding's rows), checked before any allocation.
func loadTokenizerJSON(path string, limit int) (*Vocab, error) {
	raw, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, inputErr(path, fmt.Errorf("not a tokenizer.json: %v", err))
	}
	if tj.Model.Type != "BPE" {
		return nil, inputErr(path, fmt.Errorf("model type %q is not supported for GGUF export (want BPE)", tj.Model.Type))
	}
	n := 0
	for _, id := range tj.Model.Vocab {
		n = max(n, id+1)
	}
	for _, t := range tj.AddedTokens {
		n = max(n, t.ID+1)
	}
	if bound := max(limit, 0); (bound > 0 && n > bound) || n > 1<<24 {
		return nil, inputErr(path, fmt.Errorf("has token id %d but the model's embedding has %d rows", n-1, limit))
	}
	v := &Vocab{Source: path, BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	v.Tokens = make([]string, n)
	v.Scores = make([]float32, n)
	v.Types = make([]int32, n)
	set := make([]bool, n)
	for t, id := range tj.Model.Vocab {
		if id < 0 {
			return nil, inputErr(path, fmt.Errorf("token %q has negative id %d", t, id))
		}
		v.Tokens[id], v.Types[id], set[id] = t, Normal, true
	}
	for _, t := range tj.AddedTokens {
		if t.ID < 0 {
			return nil, inputErr(path, fmt.Errorf("added token %q has negative id %d", t.Content, t.ID))
		}
		v.Tokens[t.ID], set[t.ID] = t.Content, true
		v.Types[t.ID] = UserDefined
		if t.Special {
			v.Types[t.ID] = Control
		}
	}
	for i := range v.Tokens {
		if !set[i] {
			v.Tokens[i], v.Types[i] = fmt.Sprintf("[PAD%d]", i), Unused
		}
	}
	if tj.Model.ByteFallback {
		// Llama 2 / Mistral style: a SentencePiece vocabulary stored as
		// BPE. convert_hf_to_gguf.py (LlamaHfVocab) gives every token the
		// score -1000 and marks <0xNN> pieces as bytes.
		v.Model, v.Pre = "llama", "default"
		for i, t := range v.Tokens {
			v.Scores[i] = -1000
			if v.Types[i] == Normal && byteToken.MatchString(t) {
				v.Types[i] = Byte
			}
		}
		return v, nil
	}
	v.Model = "gpt2"
	if v.Merges, err = merges(tj.Model.Merges); err != nil {
		return nil, inputErr(path, err)
	}
	v.Pre = preTokenizer(tj.PreTokenizer)
	if v.Pre == "" {
		v.Pre = "default"
		v.Notices = append(v.Notices, fmt.Sprintf("%s: pre-tokenizer not recognised; GGUF gets \"default\" and llama.cpp may split text differently", path))
	}
	return v, nil
}

// merges reads "a b" strings or [a, b] pairs; in pairs, a space inside a
// part is written as U+0120, the byte-level form llama.cpp expects.
func merges(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s []string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, errors.New("model.merges is neither a list of strings nor of pairs")
	}
	out := make([]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("merge %d has %d parts, want 2", i, len(p))
		}
		out[i] = strings.ReplaceAll(p[0], " ", "\u0120") + " " + strings.ReplaceAll(p[1], " ", "\u0120")
	}
	return out, nil
}

// preTokenizers maps split regexes to llama.cpp pre-tokenizer names.
var preTokenizers = map[string]string{
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:                                                                                                 "llama-bpe",
	`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`:                                                                                                                                              "gpt-2",
	`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`: "tekken",
}

// preTokenizer recognises the pre-tokenizer of tokenizer.json: a Split
// with one of the known regexes (alone or in a Sequence), or a bare
// ByteLevel with its built-in GPT-2 regex. "" when not recognised.
func preTokenizer(raw json.RawMessage) string {
	type node struct {
		Type    string `json:"type"`
		Pattern struct {
			Regex string `json:"Regex"`
		} `json:"pattern"`
		UseRegex      *bool  `json:"use_regex"`
		PreTokenizers []node `json:"pretokenizers"`
	}
	var n node
	if json.Unmarshal(raw, &n) != nil {
		return ""
	}
	var walk func(n node) string
	walk = func(n node) string {
		switch n.Type {
		case "Split":
			return preTokenizers[n.Pattern.Regex]
		case "ByteLevel":
			if n.UseRegex == nil || *n.UseRegex {
				return "gpt-2"
			}
		case "Sequence":
			for _, c := range n.PreTokenizers {
				if p := walk(c); p != "" {
					return p
				}
			}
		}
		return ""
	}
	return walk(n)
}

// SortedNames returns the names of the named templates in order.
func (v *Vocab) SortedNames() []string {
	names := make([]string, 0, len(v.NamedTemplates))
	for k := range v.NamedTemplates {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
