package model

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(requireStories(t), "config.json"))
	require.NoError(t, err)
	c, err := ParseConfig(raw)
	require.NoError(t, err)
	require.Equal(t, &Config{
		Arch: ArchLlama, Hidden: 64, Intermediate: 172, Layers: 5, Heads: 8, KVHeads: 4, HeadDim: 8, Vocab: 512,
		NormEps: 1e-5, RopeTheta: 10000, Tied: true, MaxPositions: 512,
		BOS: 1,
	}, c)
}

func TestParseConfigDefaultsAndVariants(t *testing.T) {
	base := map[string]any{
		"model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
		"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
	}
	parse := func(t *testing.T, extra map[string]any) (*Config, error) {
		obj := map[string]any{}
		for k, v := range base {
			obj[k] = v
		}
		for k, v := range extra {
			obj[k] = v
		}
		raw, err := json.Marshal(obj)
		require.NoError(t, err)
		return ParseConfig(raw)
	}

	c, err := parse(t, nil)
	require.NoError(t, err)
	require.Equal(t, 4, c.KVHeads, "num_key_value_heads defaults to the heads")
	require.Equal(t, 32, c.HeadDim)
	require.Equal(t, 1e-6, c.NormEps)
	require.Equal(t, 10000.0, c.RopeTheta)
	require.False(t, c.Tied)
	require.Nil(t, c.RopeScaling)

	c, err = parse(t, map[string]any{"head_dim": 16, "num_key_value_heads": 2, "rope_scaling": nil, "sliding_window": nil})
	require.NoError(t, err)
	require.Equal(t, 16, c.HeadDim)
	require.Equal(t, 2, c.KVHeads)

	c, err = parse(t, map[string]any{"architectures": []string{"MixtralForCausalLM"}, "model_type": "mixtral"})
	require.NoError(t, err)
	require.Equal(t, ArchMixtral, c.Arch)
	require.Equal(t, 8, c.Experts)
	require.Equal(t, 2, c.ExpertsPerToken)

	c, err = parse(t, map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 4.0}})
	require.NoError(t, err)
	require.Equal(t, &RopeScaling{Type: RopeLinear, Factor: 4}, c.RopeScaling)
	c, err = parse(t, map[string]any{"rope_scaling": map[string]any{"rope_type": "default"}})
	require.NoError(t, err)
	require.Nil(t, c.RopeScaling)
	c, err = parse(t, map[string]any{"rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 500000.0}})
	require.NoError(t, err)
	require.Equal(t, 500000.0, c.RopeTheta)

	for _, tc := range []struct {
		extra map[string]any
		msg   string
	}{
		{map[string]any{"architectures": []string{"GPT2LMHeadModel"}}, "architecture GPT2LMHeadModel is not supported"},
		{map[string]any{"model_type": "gpt2"}, `model_type "gpt2" is not supported`},
		{map[string]any{"model_type": ""}, "names the architecture"},
		{map[string]any{"hidden_act": "gelu"}, `hidden_act "gelu"`},
		{map[string]any{"attention_bias": true}, "attention_bias"},
		{map[string]any{"rope_scaling": map[string]any{"type": "yarn", "factor": 4.0}}, `type "yarn" is not supported`},
		{map[string]any{"rope_scaling": map[string]any{"type": "dynamic", "factor": 4.0}}, `type "dynamic" is not supported`},
		{map[string]any{"rope_scaling": map[string]any{"type": "linear"}}, "has no factor"},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "needs low_freq_factor"},
		{map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": -1.0}}, "factor must be positive"},
		{map[string]any{"num_key_value_heads": 3}, "must divide"},
		{map[string]any{"hidden_size": 0}, "hidden_size must be positive"},
		{map[string]any{"head_dim": 7}, "must be even"},
		{map[string]any{"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 3}, "num_experts_per_tok"},
	} {
		_, err := parse(t, tc.extra)
		require.ErrorContains(t, err, tc.msg, "%v", tc.extra)
		require.ErrorIs(t, err, quant.ErrInput)
	}
	_, err = ParseConfig([]byte("[1]"))
	require.ErrorIs(t, err, quant.ErrInput)
}

func TestInvFreq(t *testing.T) {
	c := &Config{HeadDim: 8, RopeTheta: 10000}
	require.Equal(t, []float32{1, 0.1, 0.01, 0.001}, c.InvFreq())

	c.RopeScaling = &RopeScaling{Type: RopeLinear, Factor: 2}
	require.Equal(t, []float32{0.5, 0.05, 0.005, 0.0005}, c.InvFreq())

	// Llama 3.1's published settings: wavelengths under 8192/4 keep their
	// frequency, those over 8192/1 are divided by 8, those in between blend.
	c = &Config{HeadDim: 128, RopeTheta: 500000, RopeScaling: &RopeScaling{
		Type: RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192}}
	inv := c.InvFreq()
	require.Len(t, inv, 64)
	blended := 0
	for i, f := range inv {
		base := 1 / math.Pow(500000, float64(2*i)/128)
		wave := 2 * math.Pi / base
		switch {
		case wave < 2048:
			require.Equal(t, float32(base), f, "pair %d", i)
		case wave > 8192:
			require.Equal(t, float32(base/8), f, "pair %d", i)
		default:
			blended++
			s := (8192/wave - 1) / 3
			require.InDelta(t, base*(s+(1-s)/8), float64(f), 1e-7*base, "pair %d", i)
			require.Less(t, float64(f), base)
			require.Greater(t, float64(f), base/8)
		}
	}
	require.Positive(t, blended)
}

// copyStories writes stories260K's weights beside a config.json edited by edit.
func copyStories(t *testing.T, edit func(map[string]any)) string {
	src := requireStories(t)
	dir := t.TempDir()
	w, err := os.ReadFile(filepath.Join(src, "model.safetensors"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors"), w, 0o644))
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	require.NoError(t, err)
	cfg := map[string]any{}
	require.NoError(t, json.Unmarshal(raw, &cfg))
	edit(cfg)
	raw, err = json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644))
	return dir
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(map[string]any)
		tensor string
		msg    string
	}{
		{"missing layer", func(c map[string]any) { c["num_hidden_layers"] = 6 },
			"model.layers.5.input_layernorm.weight", "missing"},
		{"wrong intermediate", func(c map[string]any) { c["intermediate_size"] = 100 },
			"model.layers.0.mlp.gate_proj.weight", "shape [172 64], config.json implies [100 64]"},
		{"wrong kv heads", func(c map[string]any) { c["num_key_value_heads"] = 8 },
			"model.layers.0.self_attn.k_proj.weight", "shape [32 64], config.json implies [64 64]"},
		{"unused layer", func(c map[string]any) { c["num_hidden_layers"] = 4 },
			"model.layers.4.input_layernorm.weight", "not part of a llama model"},
		{"mixtral config", func(c map[string]any) { c["architectures"] = []string{"MixtralForCausalLM"} },
			"model.layers.0.block_sparse_moe.gate.weight", "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(copyStories(t, tc.edit), nil)
			require.Error(t, err)
			var te *quant.TensorError
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, tc.tensor, te.Tensor)
			require.ErrorContains(t, err, tc.msg)
			require.ErrorIs(t, err, quant.ErrInput)
		})
	}
	_, err := Load(copyStories(t, func(c map[string]any) { c["architectures"] = []string{"BertModel"} }), nil)
	require.ErrorContains(t, err, "architecture BertModel is not supported")

	dir := copyStories(t, func(map[string]any) {})
	require.NoError(t, os.Remove(filepath.Join(dir, "config.json")))
	_, err = Load(dir, nil)
	require.ErrorContains(t, err, "no config.json")

	_, err = Load(filepath.Join(t.TempDir(), "absent"), nil)
	require.Error(t, err)
}

// An untied config over a checkpoint without lm_head.weight still uses the
// embedding as the head.
func TestHeadFallsBackToEmbedding(t *testing.T) {
	m, err := Load(copyStories(t, func(c map[string]any) { c["tie_word_embeddings"] = false }), nil)
	require.NoError(t, err)
	defer m.Close()
	require.False(t, m.Config.Tied)
	require.Same(t, m.embed, m.head)
}

// A Mistral config's sliding window limits attention to the last
// sliding_window positions.
func TestSlidingWindow(t *testing.T) {
	tokens, _ := storiesReference(t)
	dir := copyStories(t, func(c map[string]any) {
		c["architectures"] = []string{"MistralForCausalLM"}
		c["model_type"] = "mistral"
		c["sliding_window"] = 5
	})
	m, err := Load(dir, nil)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, ArchMistral, m.Config.Arch)
	require.Equal(t, 5, m.Config.SlidingWindow)
	n := 16
	want := naiveForward(m.Config, floatGetter(t, dir), tokens[:n])
	s := m.NewSession(1, n)
	got, err := s.Forward([][]int{tokens[:n]}, nil)
	require.NoError(t, err)
	requireCloseToNaive(t, got, want, 2e-5)

	// And it matters: without the window the logits differ.
	full := loadStories(t)
	l, err := full.NewSession(1, n).Forward([][]int{tokens[:n]}, nil)
	require.NoError(t, err)
	d, _ := maxAbsDiff(l[(n-1)*512:], got[(n-1)*512:])
	require.Greater(t, d, 1e-2)
}

// Hostile or mistaken config.json values are refused by ParseConfig itself,
// naming the field, before anything is sized from them. head_dim 2^62
// used to panic in InvFreq's makeslice; 2^40 and num_hidden_layers 2^40
// ran out of memory; 2^31 took minutes and 4 GB before being refused.
func TestParseConfigRefusesHostileValues(t *testing.T) {
	base := map[string]any{
		"model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
		"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
	}
	for _, tc := range []struct {
		extra map[string]any
		msg   string
	}{
		{map[string]any{"head_dim": int64(1) << 62}, "head_dim must be at most"},
		{map[string]any{"head_dim": int64(1) << 40}, "head_dim must be at most"},
		{map[string]any{"head_dim": int64(1) << 31}, "head_dim must be at most"},
		{map[string]any{"head_dim": -2}, "head_dim must be positive"},
		{map[string]any{"num_hidden_layers": int64(1) << 40}, "num_hidden_layers must be at most"},
		{map[string]any{"num_hidden_layers": -1}, "num_hidden_layers must be positive"},
		{map[string]any{"hidden_size": int64(1) << 40}, "hidden_size must be at most"},
		{map[string]any{"intermediate_size": int64(1) << 50}, "intermediate_size must be at most"},
		{map[string]any{"vocab_size": int64(1) << 33}, "vocab_size must be at most"},
		{map[string]any{"num_attention_heads": int64(1) << 20}, "num_attention_heads must be at most"},
		{map[string]any{"num_key_value_heads": int64(1) << 20}, "num_key_value_heads must be at most"},
		{map[string]any{"num_key_value_heads": 0}, "num_key_value_heads must be positive"},
		{map[string]any{"max_position_embeddings": -5}, "max_position_embeddings"},
		{map[string]any{"max_position_embeddings": int64(1) << 40}, "max_position_embeddings"},
		{map[string]any{"sliding_window": int64(1) << 40}, "sliding_window"},
		{map[string]any{"rms_norm_eps": 0}, "rms_norm_eps"},
		{map[string]any{"rms_norm_eps": 1e300}, "rms_norm_eps"},
		{map[string]any{"rope_theta": 1e-300}, "rope_theta"},
		{map[string]any{"rope_theta": -1}, "rope_theta"},
		{map[string]any{"bos_token_id": 100}, "bos_token_id"},
		{map[string]any{"bos_token_id": -1}, "bos_token_id"},
		{map[string]any{"head_dim": 1e30}, "head_dim"},
		{map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 1e-300}}, "factor"},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
			"high_freq_factor": 4.0, "original_max_position_embeddings": int64(1) << 40}}, "original_max_position_embeddings"},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
			"high_freq_factor": 1.0, "original_max_position_embeddings": 8192}}, "low_freq_factor < high_freq_factor"},
		{map[string]any{"model_type": "mixtral", "num_local_experts": int64(1) << 40}, "num_local_experts must be at most"},
		{map[string]any{"model_type": "mixtral", "num_local_experts": 5000}, "num_local_experts must be at most 4096"},
		{map[string]any{"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 0}, "num_experts_per_tok"},
	} {
		obj := map[string]any{}
		for k, v := range base {
			obj[k] = v
		}
		for k, v := range tc.extra {
			obj[k] = v
		}
		raw, err := json.Marshal(obj)
		require.NoError(t, err)
		_, err = ParseConfig(raw)
		require.ErrorContains(t, err, tc.msg, "%v", tc.extra)
		require.ErrorIs(t, err, quant.ErrInput, "%v", tc.extra)
	}
}

// InvFreq on a Config that Validate refuses allocates nothing.
func TestInvFreqRefusesHugeHeadDim(t *testing.T) {
	require.Nil(t, (&Config{HeadDim: 1 << 62, RopeTheta: 10000}).InvFreq())
	require.Nil(t, (&Config{HeadDim: -4, RopeTheta: 10000}).InvFreq())
}

// Sizes within the bounds but inconsistent with the tensors are refused by
// Load before the RoPE table or the layers are allocated, naming the
// config.json fields and the tensor that contradicts them.
func TestLoadChecksConfigAgainstTensorsFirst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(map[string]any)
		tensor string
		msg    string
	}{
		{"head_dim", func(c map[string]any) { c["head_dim"] = 1 << 20 },
			"model.layers.0.self_attn.q_proj.weight", "num_attention_heads 8 × head_dim 1048576"},
		{"layers", func(c map[string]any) { c["num_hidden_layers"] = 60000 },
			"model.layers.59999.input_layernorm.weight", "num_hidden_layers 60000; the checkpoint has 5 layers"},
		{"vocab", func(c map[string]any) { c["vocab_size"] = 1 << 24 },
			"model.embed_tokens.weight", "vocab_size 16777216"},
		{"hidden", func(c map[string]any) { c["hidden_size"] = 1 << 24; c["head_dim"] = 8 },
			"model.embed_tokens.weight", "hidden_size 16777216"},
		{"experts", func(c map[string]any) {
			c["architectures"] = []string{"MixtralForCausalLM"}
			c["num_local_experts"] = 4000
		}, "model.layers.0.block_sparse_moe.gate.weight", "num_local_experts 4000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(copyStories(t, tc.edit), nil)
			var te *quant.TensorError
			require.True(t, errors.As(err, &te), "%v", err)
			require.Equal(t, tc.tensor, te.Tensor)
			require.ErrorContains(t, err, tc.msg)
			require.ErrorIs(t, err, quant.ErrInput)
		})
	}
}

// A NaN or ±Inf weight held in binary32 is refused at load, naming the
// tensor and index, instead of making every logit NaN (eval reported
// perplexity NaN with exit 0).
func TestLoadRefusesNonFiniteWeights(t *testing.T) {
	for _, tc := range []struct {
		tensor string
		bits   uint32
	}{
		{"model.norm.weight", 0x7fc00000},                      // NaN in a vector
		{"model.layers.2.self_attn.q_proj.weight", 0xff800000}, // -Inf in a matrix
	} {
		dir := copyStories(t, func(map[string]any) {})
		path := filepath.Join(dir, "model.safetensors")
		f, err := safetensors.Open(path)
		require.NoError(t, err)
		ti, ok := f.Header().Lookup(tc.tensor)
		require.True(t, ok)
		require.Equal(t, safetensors.F32, ti.DType)
		off := f.Header().DataStart + ti.Begin + 4*3
		require.NoError(t, f.Close())
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		binary.LittleEndian.PutUint32(raw[off:], tc.bits)
		require.NoError(t, os.WriteFile(path, raw, 0o644))

		_, err = Load(dir, nil)
		require.ErrorIs(t, err, quant.ErrInput)
		var te *quant.TensorError
		require.ErrorAs(t, err, &te)
		require.Equal(t, tc.tensor, te.Tensor)
		require.ErrorContains(t, err, "at index 3")
	}
}
