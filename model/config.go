package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/mixq/mixq/quant"
)

// The architectures a Config may describe.
const (
	ArchLlama   = "llama"
	ArchMistral = "mistral"
	ArchMixtral = "mixtral"
)

// architectures maps the Hugging Face class names to Arch values.
var architectures = map[string]string{
	"LlamaForCausalLM":   ArchLlama,
	"MistralForCausalLM": ArchMistral,
	"MixtralForCausalLM": ArchMixtral,
}

// Config is the part of a Hugging Face config.json that the forward pass
// needs, with the Hugging Face defaults filled in.
type Config struct {
	// Arch is ArchLlama, ArchMistral (Llama tensors plus a sliding window)
	// or ArchMixtral (a sparse mixture of experts in every layer).
	Arch string

	Hidden, Intermediate, Layers, Heads, KVHeads, HeadDim, Vocab int
	// Experts is num_local_experts (0 for a dense model) and
	// ExpertsPerToken num_experts_per_tok.
	Experts, ExpertsPerToken int

	NormEps, RopeTheta float64
	// Tied is tie_word_embeddings: the output head is the token embedding.
	Tied bool
	// MaxPositions is max_position_embeddings (0 when absent).
	MaxPositions int
	// SlidingWindow, when positive, limits attention to the last
	// SlidingWindow positions, the current one included.
	SlidingWindow int
	// RopeScaling is nil for plain RoPE.
	RopeScaling *RopeScaling
	// BOS is bos_token_id (1, the Llama convention, when absent); sampling
	// starts from it.
	BOS int
}

// The RoPE scaling types Config supports.
const (
	RopeLinear = "linear"
	RopeLlama3 = "llama3"
)

// RopeScaling is the rope_scaling block of config.json.
type RopeScaling struct {
	// Type is RopeLinear (positions divided by Factor) or RopeLlama3
	// (Llama 3.1's frequency-dependent scaling).
	Type   string
	Factor float64
	// The llama3 parameters.
	LowFreqFactor, HighFreqFactor float64
	OriginalMaxPositions          int
}

// rawConfig mirrors config.json. Pointers tell an absent field from a zero.
type rawConfig struct {
	Architectures     []string        `json:"architectures"`
	ModelType         string          `json:"model_type"`
	HiddenAct         *string         `json:"hidden_act"`
	HiddenSize        int             `json:"hidden_size"`
	IntermediateSize  int             `json:"intermediate_size"`
	NumHiddenLayers   int             `json:"num_hidden_layers"`
	NumAttentionHeads int             `json:"num_attention_heads"`
	NumKeyValueHeads  *int            `json:"num_key_value_heads"`
	HeadDim           *int            `json:"head_dim"`
	VocabSize         int             `json:"vocab_size"`
	NumLocalExperts   *int            `json:"num_local_experts"`
	NumExpertsPerTok  *int            `json:"num_experts_per_tok"`
	RMSNormEps        *float64        `json:"rms_norm_eps"`
	RopeTheta         *float64        `json:"rope_theta"`
	TieWordEmbeddings *bool           `json:"tie_word_embeddings"`
	MaxPositions      int             `json:"max_position_embeddings"`
	BOSTokenID        *int            `json:"bos_token_id"`
	SlidingWindow     *int            `json:"sliding_window"`
	AttentionBias     bool            `json:"attention_bias"`
	MLPBias           bool            `json:"mlp_bias"`
	RopeScaling       json.RawMessage `json:"rope_scaling"`
	// RopeParameters is the newer spelling (transformers 5), which may also
	// carry rope_theta.
	RopeParameters json.RawMessage `json:"rope_parameters"`
}

type rawRope struct {
	Type           string   `json:"type"`
	RopeType       string   `json:"rope_type"`
	Factor         *float64 `json:"factor"`
	LowFreqFactor  *float64 `json:"low_freq_factor"`
	HighFreqFactor *float64 `json:"high_freq_factor"`
	OriginalMax    *int     `json:"original_max_position_embeddings"`
	RopeTheta      *float64 `json:"rope_theta"`
}

// ParseConfig reads a Hugging Face config.json describing a
// LlamaForCausalLM, MistralForCausalLM or MixtralForCausalLM model. Absent
// fields take the Hugging Face defaults: num_key_value_heads =
// num_attention_heads, head_dim = hidden_size / num_attention_heads,
// rms_norm_eps 1e-6, rope_theta 10000, tie_word_embeddings false, and for
// Mixtral 8 experts, 2 per token. Unsupported variants (another
// architecture or activation, biases, an unknown rope_scaling type) are
// errors marked with quant.ErrInput.
func ParseConfig(raw []byte) (*Config, error) {
	var r rawConfig
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, quant.InputError(fmt.Errorf("config.json: %v", err))
	}
	c, err := r.config()
	if err != nil {
		return nil, quant.InputError(fmt.Errorf("config.json: %w", err))
	}
	return c, nil
}

func (r *rawConfig) config() (*Config, error) {
	arch, err := r.arch()
	if err != nil {
		return nil, err
	}
	c := &Config{
		Arch:         arch,
		Hidden:       r.HiddenSize,
		Intermediate: r.IntermediateSize,
		Layers:       r.NumHiddenLayers,
		Heads:        r.NumAttentionHeads,
		KVHeads:      r.NumAttentionHeads,
		Vocab:        r.VocabSize,
		NormEps:      1e-6,
		RopeTheta:    10000,
		MaxPositions: r.MaxPositions,
		BOS:          1,
	}
	if r.BOSTokenID != nil {
		c.BOS = *r.BOSTokenID
	}
	if r.HiddenAct != nil && *r.HiddenAct != "silu" && *r.HiddenAct != "swish" {
		return nil, fmt.Errorf("hidden_act %q is not supported (want silu)", *r.HiddenAct)
	}
	if r.AttentionBias || r.MLPBias {
		return nil, errors.New("attention_bias and mlp_bias are not supported")
	}
	if r.NumKeyValueHeads != nil {
		c.KVHeads = *r.NumKeyValueHeads
	}
	if r.NumAttentionHeads > 0 {
		c.HeadDim = r.HiddenSize / r.NumAttentionHeads
	}
	if r.HeadDim != nil {
		c.HeadDim = *r.HeadDim
	}
	if r.RMSNormEps != nil {
		c.NormEps = *r.RMSNormEps
	}
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	if r.TieWordEmbeddings != nil {
		c.Tied = *r.TieWordEmbeddings
	}
	if r.SlidingWindow != nil {
		c.SlidingWindow = *r.SlidingWindow
	}
	if arch == ArchMixtral {
		c.Experts, c.ExpertsPerToken = 8, 2
		if r.NumLocalExperts != nil {
			c.Experts = *r.NumLocalExperts
		}
		if r.NumExpertsPerTok != nil {
			c.ExpertsPerToken = *r.NumExpertsPerTok
		}
	}
	if err := r.rope(c); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// arch decides the architecture from "architectures", or from "model_type"
// when that list is absent.
func (r *rawConfig) arch() (string, error) {
	if len(r.Architectures) > 0 {
		for _, a := range r.Architectures {
			if arch, ok := architectures[a]; ok {
				return arch, nil
			}
		}
		return "", fmt.Errorf("architecture %s is not supported (supported: LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM)",
			strings.Join(r.Architectures, ", "))
	}
	switch r.ModelType {
	case ArchLlama, ArchMistral, ArchMixtral:
		return r.ModelType, nil
	case "":
		return "", errors.New("neither \"architectures\" nor \"model_type\" names the architecture")
	}
	return "", fmt.Errorf("model_type %q is not supported (supported: llama, mistral, mixtral)", r.ModelType)
}

// rope reads rope_scaling (or rope_parameters) into c.
func (r *rawConfig) rope(c *Config) error {
	block, field := r.RopeScaling, "rope_scaling"
	if isNull(block) {
		block, field = r.RopeParameters, "rope_parameters"
	}
	if isNull(block) {
		return nil
	}
	var rr rawRope
	if err := json.Unmarshal(block, &rr); err != nil {
		return fmt.Errorf("%s: %v", field, err)
	}
	if rr.RopeTheta != nil {
		c.RopeTheta = *rr.RopeTheta
	}
	typ := rr.RopeType
	if typ == "" {
		typ = rr.Type
	}
	switch typ {
	case "", "default":
		return nil
	case RopeLinear, RopeLlama3:
	default:
		return fmt.Errorf("%s type %q is not supported (supported: default, linear, llama3)", field, typ)
	}
	rs := &RopeScaling{Type: typ}
	if rr.Factor == nil {
		return fmt.Errorf("%s type %q has no factor", field, typ)
	}
	rs.Factor = *rr.Factor
	if typ == RopeLlama3 {
		if rr.LowFreqFactor == nil || rr.HighFreqFactor == nil || rr.OriginalMax == nil {
			return fmt.Errorf("%s type llama3 needs low_freq_factor, high_freq_factor and original_max_position_embeddings", field)
		}
		rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositions = *rr.LowFreqFactor, *rr.HighFreqFactor, *rr.OriginalMax
	}
	c.RopeScaling = rs
	return nil
}

func isNull(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || string(b) == "null"
}

// Bounds on config.json values. They are far above any published model
// (the largest have hidden_size 16384, intermediate_size 53248, vocab_size
// 256000, head_dim 256, 126 layers, 128 heads and 384 experts) and low
// enough that the product of any two sizes fits in an int64, so the
// shapes computed from them cannot wrap around. The sizes are checked
// against the tensors before anything is allocated (see Load).
const (
	// MaxSize bounds hidden_size, intermediate_size, vocab_size and head_dim.
	MaxSize = 1 << 24
	// MaxCount bounds num_hidden_layers and the head counts.
	MaxCount = 1 << 16
	// MaxExperts bounds num_local_experts (the largest published models
	// have 384): readers size per-layer tables by it before they can see
	// which experts the checkpoint holds.
	MaxExperts = 1 << 12
	// MaxPositionsBound bounds max_position_embeddings, sliding_window and the
	// llama3 original_max_position_embeddings.
	MaxPositionsBound = 1 << 31
)

// Validate checks every field against sane bounds (see MaxSize) and for
// consistency; the errors name the config.json field. It allocates nothing
// that depends on the values, so a hostile config is refused at once.
func (c *Config) Validate() error {
	var errs []error
	bounded := func(field string, v, limit int) {
		switch {
		case v <= 0:
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", field, v))
		case v > limit:
			errs = append(errs, fmt.Errorf("%s must be at most %d, got %d", field, limit, v))
		}
	}
	bounded("hidden_size", c.Hidden, MaxSize)
	bounded("intermediate_size", c.Intermediate, MaxSize)
	bounded("num_hidden_layers", c.Layers, MaxCount)
	bounded("num_attention_heads", c.Heads, MaxCount)
	bounded("num_key_value_heads", c.KVHeads, MaxCount)
	bounded("head_dim", c.HeadDim, MaxSize)
	bounded("vocab_size", c.Vocab, MaxSize)
	if c.KVHeads > 0 && c.Heads%c.KVHeads != 0 {
		errs = append(errs, fmt.Errorf("num_key_value_heads (%d) must divide num_attention_heads (%d)", c.KVHeads, c.Heads))
	}
	if c.HeadDim%2 != 0 {
		errs = append(errs, fmt.Errorf("head_dim %d must be even for RoPE", c.HeadDim))
	}
	if c.Vocab > 0 && (c.BOS < 0 || c.BOS >= c.Vocab) {
		errs = append(errs, fmt.Errorf("bos_token_id %d is outside the vocabulary [0, %d)", c.BOS, c.Vocab))
	}
	// An eps of 1 or more would swamp mean(x²) of any real activation.
	if !(c.NormEps > 0 && c.NormEps < 1) {
		errs = append(errs, fmt.Errorf("rms_norm_eps must be in (0, 1), got %g", c.NormEps))
	}
	// theta ≤ 1 gives frequencies of 1 rad/position and more, growing
	// towards +Inf (NaN angles) for tiny values.
	if !(c.RopeTheta > 1) || math.IsInf(c.RopeTheta, 0) {
		errs = append(errs, fmt.Errorf("rope_theta must be finite and greater than 1, got %g", c.RopeTheta))
	}
	if c.MaxPositions < 0 || c.MaxPositions > MaxPositionsBound {
		errs = append(errs, fmt.Errorf("max_position_embeddings must be in [0, %d], got %d", MaxPositionsBound, c.MaxPositions))
	}
	if c.SlidingWindow < 0 || c.SlidingWindow > MaxPositionsBound {
		errs = append(errs, fmt.Errorf("sliding_window must be in [0, %d], got %d", MaxPositionsBound, c.SlidingWindow))
	}
	switch c.Arch {
	case ArchLlama, ArchMistral:
		if c.Experts != 0 {
			errs = append(errs, fmt.Errorf("a %s model has no experts, got %d", c.Arch, c.Experts))
		}
	case ArchMixtral:
		if c.Experts > MaxExperts {
			errs = append(errs, fmt.Errorf("num_local_experts must be at most %d, got %d", MaxExperts, c.Experts))
		} else if c.Experts <= 0 || c.ExpertsPerToken <= 0 || c.ExpertsPerToken > c.Experts {
			errs = append(errs, fmt.Errorf("need 1 ≤ num_experts_per_tok ≤ num_local_experts, got %d of %d", c.ExpertsPerToken, c.Experts))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown architecture %q", c.Arch))
	}
	if rs := c.RopeScaling; rs != nil {
		// Hugging Face's rope_config_validation asks for factor ≥ 1 too.
		if !(rs.Factor >= 1) || math.IsInf(rs.Factor, 0) {
			errs = append(errs, fmt.Errorf("rope_scaling factor must be positive, finite and at least 1, got %g", rs.Factor))
		}
		if rs.Type == RopeLlama3 && (!(rs.HighFreqFactor > rs.LowFreqFactor) || !(rs.LowFreqFactor > 0) || math.IsInf(rs.HighFreqFactor, 0) ||
			rs.OriginalMaxPositions <= 0 || rs.OriginalMaxPositions > MaxPositionsBound) {
			errs = append(errs, fmt.Errorf("rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor (finite) and original_max_position_embeddings in [1, %d], got %g, %g, %d",
				MaxPositionsBound, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositions))
		}
		if !slices.Contains([]string{RopeLinear, RopeLlama3}, rs.Type) {
			errs = append(errs, fmt.Errorf("rope_scaling type %q is not supported", rs.Type))
		}
	}
	return errors.Join(errs...)
}

// InvFreq returns the RoPE inverse frequencies of the head_dim/2 rotation
// pairs, scaled as rope_scaling says, rounded to binary32 as Hugging Face
// holds them:
//
//	inv[i] = 1 / theta^(2i/head_dim)
//	linear: inv[i] / factor
//	llama3: wavelen = 2π/inv[i]; above original/low_freq_factor divide by
//	        factor, below original/high_freq_factor keep, in between blend
//	        (1-s)·inv/factor + s·inv with s = (original/wavelen - low)/(high - low).
//
// Position p rotates pair i by the binary32 angle float32(p)·inv[i].
// A head_dim outside (0, MaxSize], which Validate refuses, gives nil rather
// than an allocation of that size.
func (c *Config) InvFreq() []float32 {
	if c.HeadDim <= 0 || c.HeadDim > MaxSize {
		return nil
	}
	half := c.HeadDim / 2
	out := make([]float32, half)
	for i := range half {
		inv := 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		if rs := c.RopeScaling; rs != nil {
			switch rs.Type {
			case RopeLinear:
				inv /= rs.Factor
			case RopeLlama3:
				orig := float64(rs.OriginalMaxPositions)
				lowWave, highWave := orig/rs.LowFreqFactor, orig/rs.HighFreqFactor
				wave := 2 * math.Pi / inv
				switch {
				case wave > lowWave:
					inv /= rs.Factor
				case wave < highWave:
				default:
					s := (orig/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
					inv = (1-s)*inv/rs.Factor + s*inv
				}
			}
		}
		out[i] = float32(inv)
	}
	return out
}
