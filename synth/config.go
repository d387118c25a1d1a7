package synth

import (
	"encoding/json"
	"fmt"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// hfConfig is the subset of a Hugging Face config.json that describes a
// Llama or Mixtral model, in the order transformers writes it.
type hfConfig struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	HiddenAct             string   `json:"hidden_act"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumExpertsPerTok      int      `json:"num_experts_per_tok,omitempty"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	NumLocalExperts       int      `json:"num_local_experts,omitempty"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	TorchDType            string   `json:"torch_dtype"`
	VocabSize             int      `json:"vocab_size"`
}

// torchDTypes maps the dtypes a synthetic checkpoint may use to the names
// transformers writes in torch_dtype.
var torchDTypes = map[safetensors.DType]string{
	safetensors.F32:  "float32",
	safetensors.F16:  "float16",
	safetensors.BF16: "bfloat16",
}

// checkDType resolves the empty dtype to BF16 and rejects any dtype other
// than F32, F16 and BF16.
func checkDType(d safetensors.DType) (safetensors.DType, error) {
	if d == "" {
		return safetensors.BF16, nil
	}
	if _, ok := torchDTypes[d]; !ok {
		return "", quant.InputError(fmt.Errorf("synthetic checkpoints are F32, F16 or BF16, not %q", d))
	}
	return d, nil
}

// Config returns the Hugging Face config.json of the checkpoint, indented,
// with a final newline: LlamaForCausalLM (model_type llama) or
// MixtralForCausalLM (model_type mixtral, with num_local_experts and
// num_experts_per_tok), rms_norm_eps 1e-5, rope_theta 10000, and
// max_position_embeddings 4096 for llama, 32768 for mixtral. An empty dtype
// means BF16. It fails for an invalid preset or a dtype other than F32, F16
// and BF16. A NoEmbeddings preset still reports its vocab_size.
func (p Preset) Config(dtype safetensors.DType) ([]byte, error) {
	dtype, err := checkDType(dtype)
	if err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := hfConfig{
		Architectures:         []string{"LlamaForCausalLM"},
		ModelType:             ArchLlama,
		HiddenAct:             "silu",
		HiddenSize:            p.Hidden,
		IntermediateSize:      p.Intermediate,
		MaxPositionEmbeddings: 4096,
		NumAttentionHeads:     p.Heads,
		NumHiddenLayers:       p.Layers,
		NumKeyValueHeads:      p.KVHeads,
		RMSNormEps:            1e-5,
		RopeTheta:             10000,
		TieWordEmbeddings:     p.TieEmbeddings,
		TorchDType:            torchDTypes[dtype],
		VocabSize:             p.Vocab,
	}
	if p.Arch == ArchMixtral {
		c.Architectures = []string{"MixtralForCausalLM"}
		c.ModelType = ArchMixtral
		c.MaxPositionEmbeddings = 32768
		c.NumLocalExperts = p.Experts
		c.NumExpertsPerTok = p.ExpertsPerToken
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
