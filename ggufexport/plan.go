package ggufexport

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/mixq/mixq/gguf"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/tokenizer"
)

// Source is one tensor of a mixq checkpoint: its name and record.
type Source struct {
	Name   string
	Record qformat.Record
}

// Options controls the export.
type Options struct {
	// Name is general.name.
	Name string
	// TokenizerDir is where tokenizer.model / tokenizer.json and their
	// companions are read from (the original checkpoint or the mixq output).
	TokenizerDir string
	// VocabFrom, when set, is a GGUF file whose tokenizer.* metadata is
	// copied instead of reading tokenizer files.
	VocabFrom string
	// NoVocab writes tokenizer.ggml.model "none" when there is no
	// tokenizer: llama.cpp loads such a file but cannot tokenize text.
	NoVocab bool
}

// RopeFreqsName is the tensor llama3 RoPE scaling adds.
const RopeFreqsName = "rope_freqs.weight"

// Tensor is one tensor of the GGUF file and where its data comes from.
type Tensor struct {
	Name string
	Type gguf.GGMLType
	// Parts are the source tensors, stacked along a new leading axis when
	// there are several (Mixtral experts); nil for generated tensors.
	Parts []Source
	// Heads > 0 permutes rows from rotate_half order (Q and K).
	Heads int
	// Rows and Cols of each part (rows: product of all but the last dim).
	Rows, Cols int64
	// Generated holds the F32 values of a generated tensor (rope_freqs).
	Generated []float32
}

// Export is a planned GGUF file.
type Export struct {
	Layout  *gguf.Layout
	Tensors []Tensor
	// Notices are things to tell the user (F16 fallbacks, widened experts,
	// skipped tensors).
	Notices []string
}

// ErrNoTokenizer wraps tokenizer.ErrNoTokenizer with advice.
var ErrNoTokenizer = tokenizer.ErrNoTokenizer

var layerRe = regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)$`)
var expertRe = regexp.MustCompile(`^block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$`)

// perLayer maps a layer tensor's suffix to its GGUF name.
var perLayer = map[string]string{
	"input_layernorm.weight":          "attn_norm.weight",
	"post_attention_layernorm.weight": "ffn_norm.weight",
	"self_attn.q_proj.weight":         "attn_q.weight",
	"self_attn.k_proj.weight":         "attn_k.weight",
	"self_attn.v_proj.weight":         "attn_v.weight",
	"self_attn.o_proj.weight":         "attn_output.weight",
	"mlp.gate_proj.weight":            "ffn_gate.weight",
	"mlp.up_proj.weight":              "ffn_up.weight",
	"mlp.down_proj.weight":            "ffn_down.weight",
	"block_sparse_moe.gate.weight":    "ffn_gate_inp.weight",
}

var expertNames = map[string]string{"w1": "ffn_gate_exps.weight", "w2": "ffn_down_exps.weight", "w3": "ffn_up_exps.weight"}

var topLevel = map[string]string{
	"model.embed_tokens.weight": "token_embd.weight",
	"model.norm.weight":         "output_norm.weight",
	"lm_head.weight":            "output.weight",
}

func bad(name, format string, args ...any) error {
	return quant.InputError(&quant.TensorError{Tensor: name, Err: fmt.Errorf(format, args...)})
}

// sourceType is the ggml type one source tensor is written as, and a
// notice when it is not stored losslessly.
func sourceType(s Source) (gguf.GGMLType, string) {
	r := s.Record
	if len(r.Shape) <= 1 {
		return gguf.F32, ""
	}
	cols := r.Shape[len(r.Shape)-1]
	switch r.Precision {
	case "f16":
		return gguf.F16, ""
	case "f32":
		return gguf.F32, ""
	case qformat.Keep:
		if r.DType == "F16" {
			return gguf.F16, ""
		}
		return gguf.F32, ""
	}
	// A group longer than the row is the row (one scale per row).
	g := min(int64(r.GroupSize), cols)
	why := ""
	switch {
	case cols%gguf.QK != 0:
		why = fmt.Sprintf("its rows of %d are not a multiple of %d", cols, gguf.QK)
	case g%gguf.QK != 0:
		why = fmt.Sprintf("its group size %d is not a multiple of %d", g, gguf.QK)
	}
	if why != "" {
		return gguf.F16, fmt.Sprintf("%s (%s) is written as F16 (values rounded to f16) because %s", s.Name, r.Precision, why)
	}
	if r.Precision == "int4" {
		return gguf.Q4_0, ""
	}
	return gguf.Q8_0, ""
}

// stackType is the one type that holds every part losslessly.
func stackType(types []gguf.GGMLType) gguf.GGMLType {
	t := types[0]
	same, quantized := true, true
	for _, u := range types {
		same = same && u == t
		quantized = quantized && (u == gguf.Q4_0 || u == gguf.Q8_0)
	}
	switch {
	case same:
		return t
	case quantized:
		return gguf.Q8_0
	}
	return gguf.F32
}

// Plan lays out the GGUF file for the given source tensors (in file
// order) and config.json.
func Plan(config []byte, srcs []Source, opt Options) (*Export, error) {
	if config == nil {
		return nil, quant.InputError(errors.New("GGUF export needs config.json (architecture and hyperparameters)"))
	}
	cfg, err := model.ParseConfig(config)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(config, &raw) // ParseConfig already checked it is an object
	x := &Export{}
	experts := map[string]*Tensor{} // stacked tensor name → tensor
	expertParts := map[string][]Source{}
	var order []*Tensor
	var vocabRows int64 = -1
	for _, s := range srcs {
		shape := s.Record.Shape
		var gname string
		heads := 0
		if g, ok := topLevel[s.Name]; ok {
			gname = g
			if s.Name == "model.embed_tokens.weight" && len(shape) == 2 {
				vocabRows = shape[0]
			}
		} else if m := layerRe.FindStringSubmatch(s.Name); m != nil {
			bid, _ := strconv.Atoi(m[1])
			if bid >= cfg.Layers {
				return nil, bad(s.Name, "layer %d is beyond num_hidden_layers %d", bid, cfg.Layers)
			}
			suffix := m[2]
			if strings.HasSuffix(suffix, "rotary_emb.inv_freq") {
				x.Notices = append(x.Notices, fmt.Sprintf("%s skipped (llama.cpp computes RoPE itself)", s.Name))
				continue
			}
			if em := expertRe.FindStringSubmatch(suffix); em != nil && cfg.Experts > 0 {
				xid, _ := strconv.Atoi(em[1])
				if xid >= cfg.Experts {
					return nil, bad(s.Name, "expert %d is beyond num_local_experts %d", xid, cfg.Experts)
				}
				name := fmt.Sprintf("blk.%d.%s", bid, expertNames[em[2]])
				t, ok := experts[name]
				if !ok {
					t = &Tensor{Name: name}
					experts[name] = t
					expertParts[name] = make([]Source, cfg.Experts)
					order = append(order, t)
				}
				if expertParts[name][xid].Name != "" {
					return nil, bad(s.Name, "expert given twice")
				}
				expertParts[name][xid] = s
				continue
			}
			g, ok := perLayer[suffix]
			if !ok {
				return nil, bad(s.Name, "has no place in a GGUF %q model (llama.cpp's llama loader has no such tensor)", "llama")
			}
			gname = fmt.Sprintf("blk.%d.%s", bid, g)
			switch suffix {
			case "self_attn.q_proj.weight":
				heads = cfg.Heads
			case "self_attn.k_proj.weight":
				heads = cfg.KVHeads
			}
		} else {
			return nil, bad(s.Name, "has no place in a GGUF %q model (llama.cpp's llama loader has no such tensor)", "llama")
		}
		t := &Tensor{Name: gname, Parts: []Source{s}, Heads: heads}
		order = append(order, t)
	}
	for name, parts := range expertParts {
		for i, p := range parts {
			if p.Name == "" {
				return nil, bad(name, "expert %d of %d is missing from the checkpoint", i, len(parts))
			}
			if fmt.Sprint(p.Record.Shape) != fmt.Sprint(parts[0].Record.Shape) {
				return nil, bad(p.Name, "shape %v differs from expert 0's %v: experts cannot be stacked", p.Record.Shape, parts[0].Record.Shape)
			}
		}
		experts[name].Parts = parts
	}
	if vocabRows < 0 {
		return nil, quant.InputError(errors.New("GGUF export needs model.embed_tokens.weight [vocab, hidden]"))
	}
	var infos []gguf.TensorInfo
	elems := map[gguf.GGMLType]int64{}
	for _, t := range order {
		shape := t.Parts[0].Record.Shape
		t.Cols = 1
		if len(shape) > 0 {
			t.Cols = shape[len(shape)-1]
		}
		t.Rows = qformat.Input{Shape: shape}.NumElements() / max(t.Cols, 1)
		types := make([]gguf.GGMLType, len(t.Parts))
		for i, p := range t.Parts {
			var note string
			types[i], note = sourceType(p)
			if note != "" {
				x.Notices = append(x.Notices, note)
			}
		}
		t.Type = stackType(types)
		if slices.ContainsFunc(types, func(u gguf.GGMLType) bool { return u != t.Type }) {
			x.Notices = append(x.Notices, fmt.Sprintf("%s: experts of different precisions are stacked as %s (lossless)", t.Name, t.Type))
		}
		if t.Heads > 0 {
			if len(shape) != 2 || t.Rows%int64(2*t.Heads) != 0 {
				return nil, bad(t.Parts[0].Name, "shape %v does not split into %d heads of even size: Q/K rows cannot be permuted for llama.cpp", shape, t.Heads)
			}
		}
		dims := make([]uint64, 0, len(shape)+1)
		for i := len(shape) - 1; i >= 0; i-- {
			dims = append(dims, uint64(shape[i]))
		}
		if len(t.Parts) > 1 {
			dims = append(dims, uint64(len(t.Parts)))
		}
		if len(shape) >= 2 {
			elems[t.Type] += t.Rows * t.Cols * int64(len(t.Parts))
		}
		x.Tensors = append(x.Tensors, *t)
		infos = append(infos, gguf.TensorInfo{Name: t.Name, Dims: dims, Type: t.Type})
	}
	if err := checkComplete(order, cfg); err != nil {
		return nil, err
	}
	if cfg.RopeScaling != nil && cfg.RopeScaling.Type == model.RopeLlama3 {
		f := llama3Factors(cfg)
		x.Tensors = append(x.Tensors, Tensor{Name: RopeFreqsName, Type: gguf.F32, Rows: 1, Cols: int64(len(f)), Generated: f})
		infos = append(infos, gguf.TensorInfo{Name: RopeFreqsName, Dims: []uint64{uint64(len(f))}, Type: gguf.F32})
	}
	if cfg.SlidingWindow > 0 && (cfg.MaxPositions == 0 || cfg.SlidingWindow < cfg.MaxPositions) {
		x.Notices = append(x.Notices, fmt.Sprintf("sliding_window %d has no key in GGUF %q: llama.cpp attends over the whole context", cfg.SlidingWindow, "llama"))
	}
	kvs := modelKVs(cfg, raw, vocabRows, fileType(elems), opt)
	tk, notes, err := vocabKVs(opt, vocabRows)
	if err != nil {
		return nil, err
	}
	x.Notices = append(x.Notices, notes...)
	kvs = append(kvs, tk...)
	if x.Layout, err = gguf.NewLayout(kvs, infos); err != nil {
		return nil, err
	}
	return x, nil
}

// checkComplete refuses a checkpoint that lacks a tensor llama.cpp's
// loader requires, naming it, rather than write a file that cannot load.
func checkComplete(order []*Tensor, cfg *model.Config) error {
	have := map[string]bool{}
	for _, t := range order {
		have[t.Name] = true
	}
	need := []string{"token_embd.weight", "output_norm.weight"}
	for b := 0; b < cfg.Layers; b++ {
		for _, n := range []string{"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm"} {
			need = append(need, fmt.Sprintf("blk.%d.%s.weight", b, n))
		}
		ffn := []string{"ffn_gate", "ffn_up", "ffn_down"}
		if cfg.Experts > 0 {
			ffn = []string{"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}
		}
		for _, n := range ffn {
			need = append(need, fmt.Sprintf("blk.%d.%s.weight", b, n))
		}
	}
	for _, n := range need {
		if !have[n] {
			return quant.InputError(fmt.Errorf("GGUF export: the checkpoint has no tensor for %s, which llama.cpp requires", n))
		}
	}
	return nil
}

// fileType is general.file_type: the llama_ftype of the type holding the
// most matrix elements.
func fileType(elems map[gguf.GGMLType]int64) uint32 {
	ftypes := map[gguf.GGMLType]uint32{gguf.F32: 0, gguf.F16: 1, gguf.Q4_0: 2, gguf.Q8_0: 7, gguf.BF16: 32}
	best, n := gguf.F32, int64(-1)
	for _, t := range []gguf.GGMLType{gguf.F32, gguf.F16, gguf.Q8_0, gguf.Q4_0} {
		if elems[t] > n {
			best, n = t, elems[t]
		}
	}
	return ftypes[best]
}

// modelKVs are the general.* and llama.* keys, with the types gguf-py's
// GGUFWriter gives them.
func modelKVs(cfg *model.Config, raw map[string]json.RawMessage, vocab int64, ftype uint32, opt Options) []gguf.KV {
	const a = "llama."
	name := opt.Name
	if name == "" {
		name = "model"
	}
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.type", Value: "model"},
		{Key: "general.name", Value: name},
		{Key: "general.file_type", Value: ftype},
		{Key: "general.quantization_version", Value: uint32(2)},
		{Key: a + "vocab_size", Value: uint32(vocab)},
		{Key: a + "block_count", Value: uint32(cfg.Layers)},
	}
	if cfg.MaxPositions > 0 {
		kvs = append(kvs, gguf.KV{Key: a + "context_length", Value: uint32(cfg.MaxPositions)})
	}
	kvs = append(kvs,
		gguf.KV{Key: a + "embedding_length", Value: uint32(cfg.Hidden)},
		gguf.KV{Key: a + "feed_forward_length", Value: uint32(cfg.Intermediate)},
		gguf.KV{Key: a + "attention.head_count", Value: uint32(cfg.Heads)},
		gguf.KV{Key: a + "attention.head_count_kv", Value: uint32(cfg.KVHeads)},
		gguf.KV{Key: a + "rope.freq_base", Value: float32(cfg.RopeTheta)},
		gguf.KV{Key: a + "attention.layer_norm_rms_epsilon", Value: float32(cfg.NormEps)},
	)
	if cfg.Experts > 0 {
		kvs = append(kvs,
			gguf.KV{Key: a + "expert_count", Value: uint32(cfg.Experts)},
			gguf.KV{Key: a + "expert_used_count", Value: uint32(cfg.ExpertsPerToken)})
	}
	if _, ok := raw["head_dim"]; ok || cfg.HeadDim*cfg.Heads != cfg.Hidden {
		kvs = append(kvs,
			gguf.KV{Key: a + "attention.key_length", Value: uint32(cfg.HeadDim)},
			gguf.KV{Key: a + "attention.value_length", Value: uint32(cfg.HeadDim)})
	}
	kvs = append(kvs, gguf.KV{Key: a + "rope.dimension_count", Value: uint32(cfg.HeadDim)})
	if rs := cfg.RopeScaling; rs != nil && rs.Type == model.RopeLinear {
		kvs = append(kvs,
			gguf.KV{Key: a + "rope.scaling.type", Value: "linear"},
			gguf.KV{Key: a + "rope.scaling.factor", Value: float32(rs.Factor)})
	}
	return kvs
}

// llama3Factors are the per-frequency divisors of Llama 3.1's RoPE
// scaling, as convert_hf_to_gguf.py computes them for rope_freqs.weight.
func llama3Factors(cfg *model.Config) []float32 {
	rs := cfg.RopeScaling
	dim := cfg.HeadDim
	lowWave := float64(rs.OriginalMaxPositions) / rs.LowFreqFactor
	highWave := float64(rs.OriginalMaxPositions) / rs.HighFreqFactor
	out := make([]float32, 0, dim/2)
	for i := 0; i < dim; i += 2 {
		freq := 1 / math.Pow(cfg.RopeTheta, float64(float32(i)/float32(dim)))
		wave := 2 * math.Pi / freq
		switch {
		case wave < highWave:
			out = append(out, 1)
		case wave > lowWave:
			out = append(out, float32(rs.Factor))
		default:
			smooth := (float64(rs.OriginalMaxPositions)/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
			out = append(out, float32(1/((1-smooth)/rs.Factor+smooth)))
		}
	}
	return out
}

// vocabKVs are the tokenizer.* keys.
func vocabKVs(opt Options, rows int64) ([]gguf.KV, []string, error) {
	if opt.VocabFrom != "" {
		return vocabFromGGUF(opt.VocabFrom, rows)
	}
	v, err := tokenizer.Load(opt.TokenizerDir, int(rows))
	if errors.Is(err, tokenizer.ErrNoTokenizer) {
		if opt.NoVocab {
			return []gguf.KV{{Key: "tokenizer.ggml.model", Value: "none"}},
				[]string{"no tokenizer: the GGUF has no vocabulary (llama.cpp loads it but cannot tokenize text)"}, nil
		}
		return nil, nil, quant.InputError(fmt.Errorf("%s has no tokenizer.model or tokenizer.json: a GGUF needs a vocabulary (copy the tokenizer files there, take one with --vocab-from FILE.gguf, or export without one with --no-vocab)", opt.TokenizerDir))
	}
	if err != nil {
		return nil, nil, err
	}
	const t = "tokenizer.ggml."
	kvs := []gguf.KV{
		{Key: t + "model", Value: v.Model},
		{Key: t + "pre", Value: v.Pre},
		{Key: t + "tokens", Value: v.Tokens},
		{Key: t + "scores", Value: v.Scores},
		{Key: t + "token_type", Value: v.Types},
	}
	if len(v.Merges) > 0 {
		kvs = append(kvs, gguf.KV{Key: t + "merges", Value: v.Merges})
	}
	for _, id := range []struct {
		key string
		id  int
	}{{"bos_token_id", v.BOS}, {"eos_token_id", v.EOS}, {"unknown_token_id", v.UNK}, {"padding_token_id", v.PAD}} {
		if id.id >= 0 {
			kvs = append(kvs, gguf.KV{Key: t + id.key, Value: uint32(id.id)})
		}
	}
	if v.AddBOS != nil {
		kvs = append(kvs, gguf.KV{Key: t + "add_bos_token", Value: *v.AddBOS})
	}
	if v.AddEOS != nil {
		kvs = append(kvs, gguf.KV{Key: t + "add_eos_token", Value: *v.AddEOS})
	}
	if v.AddSpacePrefix != nil {
		kvs = append(kvs, gguf.KV{Key: t + "add_space_prefix", Value: *v.AddSpacePrefix})
	}
	if v.ChatTemplate != "" {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.chat_template", Value: v.ChatTemplate})
	}
	for _, n := range v.SortedNames() {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.chat_template." + n, Value: v.NamedTemplates[n]})
	}
	return kvs, v.Notices, nil
}

// vocabFromGGUF copies every tokenizer.* key of another GGUF file.
func vocabFromGGUF(path string, rows int64) ([]gguf.KV, []string, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, nil, quant.InputError(err)
	}
	defer g.Close()
	var kvs []gguf.KV
	for _, kv := range g.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			kvs = append(kvs, kv)
		}
	}
	if len(kvs) == 0 {
		return nil, nil, quant.InputError(fmt.Errorf("%s has no tokenizer.* metadata", path))
	}
	if toks, ok := g.Get("tokenizer.ggml.tokens"); ok {
		if l, ok := toks.([]string); !ok || int64(len(l)) != rows {
			n := -1
			if ok {
				n = len(l)
			}
			return nil, nil, quant.InputError(fmt.Errorf("%s: its vocabulary has %d tokens, the model's embedding %d rows", path, n, rows))
		}
	}
	return kvs, nil, nil
}
