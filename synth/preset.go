package synth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Preset describes the architecture of a synthetic checkpoint.
type Preset struct {
	Name, Description string
	// Arch is "llama" (dense MLP) or "mixtral" (sparse mixture of experts).
	Arch string
	// Layers is the number of decoder layers; Hidden, Intermediate, Heads,
	// KVHeads and Vocab are the usual Hugging Face sizes.
	Layers, Hidden, Intermediate, Heads, KVHeads, Vocab int
	// Experts is the number of experts per layer (0 for llama) and
	// ExpertsPerToken how many the router picks.
	Experts, ExpertsPerToken int
	// TieEmbeddings omits lm_head.weight: the output projection reuses
	// model.embed_tokens.weight.
	TieEmbeddings bool
	// NoEmbeddings omits model.embed_tokens.weight, model.norm.weight and
	// lm_head.weight, leaving only decoder layers (benchmark checkpoints).
	NoEmbeddings bool
}

// DefaultPreset is the name of the preset the demo uses.
const DefaultPreset = "seed"

// The architectures a Preset may name.
const (
	ArchLlama   = "llama"
	ArchMixtral = "mixtral"
)

var presets = []Preset{
	{
		Name:        "tiny-moe",
		Description: "2-layer Mixtral-style MoE (hidden 64, 4 experts), for tests",
		Arch:        ArchMixtral,
		Layers:      2, Hidden: 64, Intermediate: 128, Heads: 4, KVHeads: 2, Vocab: 256,
		Experts: 4, ExpertsPerToken: 2,
	},
	{
		Name:        "tiny",
		Description: "2-layer Llama with tied embeddings and a ragged intermediate size (172), for tests",
		Arch:        ArchLlama,
		Layers:      2, Hidden: 64, Intermediate: 172, Heads: 4, KVHeads: 2, Vocab: 256,
		TieEmbeddings: true,
	},
	{
		Name:        "seed",
		Description: "12-layer Mixtral-style MoE (hidden 512, 8 experts, 194M parameters): the demo model",
		Arch:        ArchMixtral,
		Layers:      12, Hidden: 512, Intermediate: 1024, Heads: 8, KVHeads: 8, Vocab: 30000,
		Experts: 8, ExpertsPerToken: 2,
	},
	{
		Name:        "llama7b-layer",
		Description: "Llama-2-7B decoder layers without embeddings (202M parameters per layer), for kernel and memory benchmarks",
		Arch:        ArchLlama,
		Layers:      1, Hidden: 4096, Intermediate: 11008, Heads: 32, KVHeads: 32, Vocab: 32000,
		NoEmbeddings: true,
	},
}

// Presets returns the built-in presets in a stable order.
func Presets() []Preset {
	return append([]Preset(nil), presets...)
}

// Lookup returns the built-in preset called name. Its error, marked with
// quant.ErrInput, lists the valid names.
func Lookup(name string) (Preset, error) {
	names := make([]string, len(presets))
	for i, p := range presets {
		if p.Name == name {
			return p, nil
		}
		names[i] = p.Name
	}
	return Preset{}, quant.InputError(fmt.Errorf("unknown preset %q (valid: %s)", name, strings.Join(names, ", ")))
}

// WithLayers returns p with n decoder layers; the name is unchanged (the
// layer count is recorded in config.json and the checkpoint metadata).
func (p Preset) WithLayers(n int) Preset {
	p.Layers = n
	return p
}

// HeadDim is Hidden/Heads.
func (p Preset) HeadDim() int {
	if p.Heads <= 0 {
		return 0
	}
	return p.Hidden / p.Heads
}

// Validate checks that the sizes are positive and consistent: Heads divides
// Hidden, KVHeads divides Heads, a llama has no experts and a mixtral has
// 1 ≤ ExpertsPerToken ≤ Experts. Errors are marked with quant.ErrInput.
func (p Preset) Validate() error {
	var errs []error
	positive := func(field string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", field, v))
		}
	}
	positive("layers", p.Layers)
	positive("hidden", p.Hidden)
	positive("intermediate", p.Intermediate)
	positive("heads", p.Heads)
	positive("kv heads", p.KVHeads)
	positive("vocab", p.Vocab)
	if p.Heads > 0 && p.Hidden%p.Heads != 0 {
		errs = append(errs, fmt.Errorf("heads (%d) must divide hidden (%d)", p.Heads, p.Hidden))
	}
	if p.KVHeads > 0 && p.Heads%p.KVHeads != 0 {
		errs = append(errs, fmt.Errorf("kv heads (%d) must divide heads (%d)", p.KVHeads, p.Heads))
	}
	switch p.Arch {
	case ArchLlama:
		if p.Experts != 0 || p.ExpertsPerToken != 0 {
			errs = append(errs, fmt.Errorf("a llama has no experts, got %d (%d per token)", p.Experts, p.ExpertsPerToken))
		}
	case ArchMixtral:
		if p.Experts <= 0 || p.ExpertsPerToken <= 0 || p.ExpertsPerToken > p.Experts {
			errs = append(errs, fmt.Errorf("a mixtral needs 1 ≤ experts per token ≤ experts, got %d of %d", p.ExpertsPerToken, p.Experts))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown arch %q (want %s or %s)", p.Arch, ArchLlama, ArchMixtral))
	}
	if len(errs) > 0 {
		return quant.InputError(fmt.Errorf("preset %q: %w", p.Name, errors.Join(errs...)))
	}
	return nil
}

// Specs lists the tensors of the checkpoint in canonical order:
// model.embed_tokens.weight, then each layer in order (input_layernorm,
// q/k/v/o projections, post_attention_layernorm, then the MLP: gate, up,
// down projections for llama; the router gate and experts' w1, w2, w3 for
// mixtral), then model.norm.weight and lm_head.weight. An empty dtype
// means BF16. The sizes of an invalid preset are used as they are.
func (p Preset) Specs(dtype safetensors.DType) []safetensors.Spec {
	if dtype == "" {
		dtype = safetensors.BF16
	}
	h, in, v := int64(p.Hidden), int64(p.Intermediate), int64(p.Vocab)
	kv := int64(p.KVHeads) * int64(p.HeadDim())
	var specs []safetensors.Spec
	add := func(name string, shape ...int64) {
		specs = append(specs, safetensors.Spec{Name: name, DType: dtype, Shape: shape})
	}
	if !p.NoEmbeddings {
		add("model.embed_tokens.weight", v, h)
	}
	for l := range max(p.Layers, 0) {
		pre := fmt.Sprintf("model.layers.%d.", l)
		add(pre+"input_layernorm.weight", h)
		add(pre+"self_attn.q_proj.weight", h, h)
		add(pre+"self_attn.k_proj.weight", kv, h)
		add(pre+"self_attn.v_proj.weight", kv, h)
		add(pre+"self_attn.o_proj.weight", h, h)
		add(pre+"post_attention_layernorm.weight", h)
		if p.Arch == ArchMixtral {
			add(pre+"block_sparse_moe.gate.weight", int64(p.Experts), h)
			for e := range max(p.Experts, 0) {
				ex := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", pre, e)
				add(ex+"w1.weight", in, h)
				add(ex+"w2.weight", h, in)
				add(ex+"w3.weight", in, h)
			}
		} else {
			add(pre+"mlp.gate_proj.weight", in, h)
			add(pre+"mlp.up_proj.weight", in, h)
			add(pre+"mlp.down_proj.weight", h, in)
		}
	}
	if !p.NoEmbeddings {
		add("model.norm.weight", h)
		if !p.TieEmbeddings {
			add("lm_head.weight", v, h)
		}
	}
	return specs
}

// Parameters is the number of elements of all the tensors Specs lists.
func (p Preset) Parameters() int64 {
	var n int64
	for _, s := range p.Specs(safetensors.F32) {
		n += numel(&s)
	}
	return n
}
