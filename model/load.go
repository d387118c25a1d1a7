package model

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Model is a loaded Llama or Mixtral model. Its quantized weights are views
// of the checkpoint's memory mappings, valid until Close.
type Model struct {
	Config *Config

	be     quant.Backend
	closer interface{ Close() error }
	closed bool // the mappings are gone: Forward would fault

	embed  *linear // [vocab, hidden]; used by row lookup, and as the head when tied
	layers []layer
	norm   []float32
	head   *linear // lm_head, or embed when tied
	inv    []float32
}

// layer is one decoder layer.
type layer struct {
	attnNorm, mlpNorm []float32
	q, k, v, o        *linear
	// Dense MLP.
	gate, up, down *linear
	// Mixture of experts: router [experts, hidden] and the experts.
	router  *linear
	experts []expert
}

// expert is one Mixtral expert: w2(silu(w1·x) ⊙ w3·x).
type expert struct{ w1, w2, w3 *linear }

// storedDTypes are the dtypes Load accepts; I8 and U8 only as mixq codes.
var storedDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.I8, safetensors.U8}

// Load opens a checkpoint (a directory or one .safetensors file, with
// config.json beside it) and prepares it for inference. A mixq quantized
// checkpoint (qformat.IsQuantized) keeps its INT8 and INT4 matrices packed,
// in the file's mapping, and multiplies them with be.MatMul; every other
// tensor (F32, F16, BF16 or kept) is widened to binary32 once, here. A nil
// be means cpu.New(0).
//
// Every tensor the architecture needs must be present with its exact
// shape, and every tensor present must be used (a stored
// rotary_emb.inv_freq is ignored, and so is lm_head.weight when
// tie_word_embeddings is set); errors name the tensor. The output head is
// lm_head.weight, or model.embed_tokens.weight when tie_word_embeddings is
// set or lm_head.weight is absent.
func Load(path string, be quant.Backend) (*Model, error) {
	if be == nil {
		be = cpu.New(0)
	}
	ck, err := checkpoint.Open(path, checkpoint.Options{AllowedDTypes: storedDTypes})
	if err != nil {
		return nil, err
	}
	m, err := load(ck, be)
	if err != nil {
		ck.Close()
		return nil, err
	}
	return m, nil
}

func load(ck *checkpoint.Checkpoint, be quant.Backend) (*Model, error) {
	if ck.Config == nil {
		return nil, quant.InputError(fmt.Errorf("%s: no %s beside the weights", ck.Dir, checkpoint.ConfigName))
	}
	cfg, err := ParseConfig(ck.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ck.Dir, err)
	}
	var src source
	if qformat.IsQuantized(ck) {
		qm, err := qformat.FromCheckpoint(ck)
		if err != nil {
			return nil, err
		}
		src = &quantSource{qm: qm, be: be}
	} else {
		for _, t := range ck.Tensors {
			if t.DType == safetensors.I8 || t.DType == safetensors.U8 {
				return nil, quant.InputError(&quant.TensorError{File: t.File.Path(), Tensor: t.Name,
					Err: fmt.Errorf("dtype %s in a checkpoint without mixq metadata", t.DType)})
			}
		}
		src = &floatSource{ck: ck}
	}
	if err := checkShapes(cfg, src); err != nil {
		return nil, fmt.Errorf("%s: %w", ck.Dir, err)
	}
	m := &Model{Config: cfg, be: be, closer: ck, inv: cfg.InvFreq()}
	l := &loader{src: src, used: map[string]bool{}}
	if err := m.loadWeights(l); err != nil {
		return nil, err
	}
	for _, name := range src.names() {
		if l.used[name] || strings.HasSuffix(name, ".rotary_emb.inv_freq") || (name == "lm_head.weight" && cfg.Tied) {
			continue
		}
		return nil, quant.InputError(&quant.TensorError{Tensor: name,
			Err: fmt.Errorf("not part of a %s model with this config.json (unsupported variant?)", cfg.Arch)})
	}
	return m, nil
}

// checkShapes compares the sizes config.json gives with the tensors, before
// anything is allocated from them (the RoPE table, the layers, the
// weights): a hostile or mistaken num_hidden_layers, head_dim,
// intermediate_size or num_local_experts is refused at once, naming the
// fields and the tensor, instead of after allocating what it implies.
// Validate has bounded every size, so the products cannot overflow.
// loadWeights still checks every tensor.
func checkShapes(c *Config, src source) error {
	h := int64(c.Hidden)
	type want struct {
		fields string // the config.json fields that imply the shape
		tensor string
		shape  []int64
	}
	p := "model.layers.0."
	ws := []want{
		{fmt.Sprintf("vocab_size %d, hidden_size %d", c.Vocab, c.Hidden), "model.embed_tokens.weight", []int64{int64(c.Vocab), h}},
		{fmt.Sprintf("num_attention_heads %d × head_dim %d, hidden_size %d", c.Heads, c.HeadDim, c.Hidden),
			p + "self_attn.q_proj.weight", []int64{int64(c.Heads) * int64(c.HeadDim), h}},
		{fmt.Sprintf("num_key_value_heads %d × head_dim %d, hidden_size %d", c.KVHeads, c.HeadDim, c.Hidden),
			p + "self_attn.k_proj.weight", []int64{int64(c.KVHeads) * int64(c.HeadDim), h}},
	}
	if c.Experts == 0 {
		ws = append(ws, want{fmt.Sprintf("intermediate_size %d, hidden_size %d", c.Intermediate, c.Hidden),
			p + "mlp.gate_proj.weight", []int64{int64(c.Intermediate), h}})
	} else {
		ws = append(ws,
			want{fmt.Sprintf("num_local_experts %d, hidden_size %d", c.Experts, c.Hidden),
				p + "block_sparse_moe.gate.weight", []int64{int64(c.Experts), h}},
			want{fmt.Sprintf("num_local_experts %d, intermediate_size %d, hidden_size %d", c.Experts, c.Intermediate, c.Hidden),
				fmt.Sprintf("%sblock_sparse_moe.experts.%d.w1.weight", p, c.Experts-1), []int64{int64(c.Intermediate), h}})
	}
	layersHave := ""
	if n := countLayers(src.names()); n != c.Layers {
		layersHave = fmt.Sprintf("; the checkpoint has %d layers", n)
	}
	ws = append(ws, want{fmt.Sprintf("num_hidden_layers %d%s", c.Layers, layersHave),
		fmt.Sprintf("model.layers.%d.input_layernorm.weight", c.Layers-1), []int64{h}})
	for _, w := range ws {
		got, ok := src.shape(w.tensor)
		if !ok {
			return quant.InputError(&quant.TensorError{Tensor: w.tensor,
				Err: fmt.Errorf("missing from the checkpoint (config.json: %s)", w.fields)})
		}
		if !slices.Equal(got, w.shape) {
			return quant.InputError(&quant.TensorError{Tensor: w.tensor,
				Err: fmt.Errorf("shape %v, config.json implies %v (%s)", got, w.shape, w.fields)})
		}
	}
	return nil
}

// countLayers is one more than the highest N of the model.layers.N.*
// tensors (0 when there are none).
func countLayers(names []string) int {
	n := 0
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, "model.layers.")
		if !ok {
			continue
		}
		idx, _, ok := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(idx); ok && err == nil && i >= 0 && i < MaxCount {
			n = max(n, i+1)
		}
	}
	return n
}

func (m *Model) loadWeights(l *loader) error {
	c := m.Config
	h, qd, kvd := c.Hidden, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	m.embed = l.linear("model.embed_tokens.weight", c.Vocab, h)
	m.layers = make([]layer, c.Layers)
	for i := range m.layers {
		ly := &m.layers[i]
		p := fmt.Sprintf("model.layers.%d.", i)
		ly.attnNorm = l.vector(p+"input_layernorm.weight", h)
		ly.q = l.linear(p+"self_attn.q_proj.weight", qd, h)
		ly.k = l.linear(p+"self_attn.k_proj.weight", kvd, h)
		ly.v = l.linear(p+"self_attn.v_proj.weight", kvd, h)
		ly.o = l.linear(p+"self_attn.o_proj.weight", h, qd)
		ly.mlpNorm = l.vector(p+"post_attention_layernorm.weight", h)
		if c.Experts == 0 {
			ly.gate = l.linear(p+"mlp.gate_proj.weight", c.Intermediate, h)
			ly.up = l.linear(p+"mlp.up_proj.weight", c.Intermediate, h)
			ly.down = l.linear(p+"mlp.down_proj.weight", h, c.Intermediate)
			continue
		}
		ly.router = l.linear(p+"block_sparse_moe.gate.weight", c.Experts, h)
		ly.experts = make([]expert, c.Experts)
		for e := range ly.experts {
			x := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, e)
			ly.experts[e] = expert{
				w1: l.linear(x+"w1.weight", c.Intermediate, h),
				w2: l.linear(x+"w2.weight", h, c.Intermediate),
				w3: l.linear(x+"w3.weight", c.Intermediate, h),
			}
		}
	}
	m.norm = l.vector("model.norm.weight", h)
	if _, ok := l.src.shape("lm_head.weight"); ok && !c.Tied {
		m.head = l.linear("lm_head.weight", c.Vocab, h)
	} else {
		m.head = m.embed
	}
	return l.err
}

// loader loads tensors, remembering the first error and which names it used.
type loader struct {
	src  source
	used map[string]bool
	err  error
}

func (l *loader) check(name string, shape ...int) bool {
	if l.err != nil {
		return false
	}
	l.used[name] = true
	got, ok := l.src.shape(name)
	if !ok {
		l.err = quant.InputError(&quant.TensorError{Tensor: name, Err: errors.New("missing from the checkpoint")})
		return false
	}
	want := make([]int64, len(shape))
	for i, d := range shape {
		want[i] = int64(d)
	}
	if !slices.Equal(got, want) {
		l.err = quant.InputError(&quant.TensorError{Tensor: name, Err: fmt.Errorf("shape %v, config.json implies %v", got, want)})
		return false
	}
	return true
}

func (l *loader) linear(name string, rows, cols int) *linear {
	lin := &linear{name: name, rows: rows, cols: cols}
	if !l.check(name, rows, cols) {
		return lin
	}
	if err := l.src.load(lin); err != nil {
		l.err = err
		return lin
	}
	l.finite(name, lin.w)
	return lin
}

func (l *loader) vector(name string, n int) []float32 {
	if !l.check(name, n) {
		return nil
	}
	v := make([]float32, n)
	if err := l.src.float32(name, v); err != nil {
		l.err = err
		return v
	}
	l.finite(name, v)
	return v
}

// finite refuses a NaN or ±Inf weight held in binary32, naming the tensor
// and the lowest such index: it would turn every logit into NaN and eval
// would report perplexity NaN. (Packed codes are checked by
// qformat.Model.Codes, whose scales and codes cannot decode to either.)
func (l *loader) finite(name string, w []float32) {
	for i, v := range w {
		if !quant.IsFinite(v) {
			l.err = quant.InputError(&quant.TensorError{Tensor: name, Err: &quant.NonFiniteError{Index: i, Value: v}})
			return
		}
	}
}

// source is where the loader reads tensors: an original checkpoint or a
// mixq quantized one.
type source interface {
	names() []string
	shape(name string) ([]int64, bool)
	// float32 widens a floating-point tensor into dst.
	float32(name string, dst []float32) error
	// load fills lin with the tensor: packed codes when quantized, else
	// binary32.
	load(lin *linear) error
}

type floatSource struct{ ck *checkpoint.Checkpoint }

func (s *floatSource) names() []string {
	out := make([]string, len(s.ck.Tensors))
	for i, t := range s.ck.Tensors {
		out[i] = t.Name
	}
	return out
}

func (s *floatSource) shape(name string) ([]int64, bool) {
	t, ok := s.ck.Lookup(name)
	if !ok {
		return nil, false
	}
	return t.Shape, true
}

func (s *floatSource) float32(name string, dst []float32) error {
	t, _ := s.ck.Lookup(name)
	err := t.Float32(dst)
	t.Release()
	return err
}

func (s *floatSource) load(lin *linear) error {
	lin.w = make([]float32, lin.rows*lin.cols)
	return s.float32(lin.name, lin.w)
}

type quantSource struct {
	qm *qformat.Model
	be quant.Backend
}

func (s *quantSource) names() []string {
	out := make([]string, len(s.qm.Entries))
	for i, e := range s.qm.Entries {
		out[i] = e.Name
	}
	return out
}

func (s *quantSource) shape(name string) ([]int64, bool) {
	e, ok := s.qm.Lookup(name)
	if !ok {
		return nil, false
	}
	return e.Record.Shape, true
}

func (s *quantSource) float32(name string, dst []float32) error {
	e, _ := s.qm.Lookup(name)
	if e.Precision().Quantized() {
		return quant.InputError(&quant.TensorError{Tensor: name, Err: fmt.Errorf("stored as %s; a vector must be kept or floating point", e.Record.Precision)})
	}
	if err := s.qm.Float32(e, dst, s.be); err != nil {
		return err
	}
	s.qm.Release(e)
	return nil
}

func (s *quantSource) load(lin *linear) error {
	e, _ := s.qm.Lookup(lin.name)
	if !e.Precision().Quantized() {
		lin.w = make([]float32, lin.rows*lin.cols)
		return s.float32(lin.name, lin.w)
	}
	if e.Layout.Rows != lin.rows || e.Layout.Cols != lin.cols {
		return quant.InputError(&quant.TensorError{Tensor: lin.name,
			Err: fmt.Errorf("quantized layout %d×%d, want %d×%d", e.Layout.Rows, e.Layout.Cols, lin.rows, lin.cols)})
	}
	packed, scales, err := s.qm.Codes(e)
	if err != nil {
		return err
	}
	lin.packed, lin.scales, lin.layout = packed, scales, e.Layout
	return nil
}

// Close unmaps the checkpoint. Forward fails afterwards (it must not run
// concurrently with Close); closing twice is a no-op.
func (m *Model) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	return m.closer.Close()
}

// Backend is the backend that runs the quantized matrix products.
func (m *Model) Backend() quant.Backend { return m.be }

// LinearNames returns the full tensor name of every linear weight, in the
// order Forward applies them (and calls the Observer): per layer q, k, v,
// o projections, then gate, up, down projections (dense) or the router
// block_sparse_moe.gate followed by each expert's w1, w3, w2 (Mixtral);
// last the output head, lm_head.weight, or model.embed_tokens.weight when
// the head is tied to the embedding.
func (m *Model) LinearNames() []string {
	var out []string
	for i := range m.layers {
		for _, l := range m.layers[i].linears() {
			out = append(out, l.name)
		}
	}
	return append(out, m.head.name)
}

func (ly *layer) linears() []*linear {
	out := []*linear{ly.q, ly.k, ly.v, ly.o}
	if ly.router == nil {
		return append(out, ly.gate, ly.up, ly.down)
	}
	out = append(out, ly.router)
	for _, e := range ly.experts {
		out = append(out, e.w1, e.w3, e.w2)
	}
	return out
}

// Linear describes one weight matrix as the model holds it.
type Linear struct {
	Name       string
	Rows, Cols int
	// Precision is INT8 or INT4 for a packed matrix, F32 for one held as
	// binary32 (whatever its stored dtype).
	Precision quant.Precision
}

// Linears describes every linear weight in LinearNames order.
func (m *Model) Linears() []Linear {
	var ls []*linear
	for i := range m.layers {
		ls = append(ls, m.layers[i].linears()...)
	}
	ls = append(ls, m.head)
	out := make([]Linear, len(ls))
	for i, l := range ls {
		p := quant.F32
		if l.quantized() {
			p = l.layout.Precision
		}
		out[i] = Linear{Name: l.name, Rows: l.rows, Cols: l.cols, Precision: p}
	}
	return out
}

// Float32Elements is the number of binary32 weight elements the model holds
// in memory (widened tensors; packed matrices count nothing).
func (m *Model) Float32Elements() int64 {
	n := int64(len(m.embed.w) + len(m.norm))
	if m.head != m.embed {
		n += int64(len(m.head.w))
	}
	for i := range m.layers {
		ly := &m.layers[i]
		n += int64(len(ly.attnNorm) + len(ly.mlpNorm))
		for _, l := range ly.linears() {
			n += int64(len(l.w))
		}
	}
	return n
}
