package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

// configJSON writes c back as a config.json that ParseConfig reads as c.
func configJSON(t *testing.T, c *Config) []byte {
	class := map[string]string{ArchLlama: "LlamaForCausalLM", ArchMistral: "MistralForCausalLM", ArchMixtral: "MixtralForCausalLM"}[c.Arch]
	obj := map[string]any{
		"architectures": []string{class}, "hidden_size": c.Hidden, "intermediate_size": c.Intermediate,
		"num_hidden_layers": c.Layers, "num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads,
		"head_dim": c.HeadDim, "vocab_size": c.Vocab, "rms_norm_eps": c.NormEps, "rope_theta": c.RopeTheta,
		"tie_word_embeddings": c.Tied, "max_position_embeddings": c.MaxPositions,
		"sliding_window": c.SlidingWindow, "bos_token_id": c.BOS,
	}
	if c.Arch == ArchMixtral {
		obj["num_local_experts"], obj["num_experts_per_tok"] = c.Experts, c.ExpertsPerToken
	}
	if rs := c.RopeScaling; rs != nil {
		r := map[string]any{"rope_type": rs.Type, "factor": rs.Factor}
		if rs.Type == RopeLlama3 {
			r["low_freq_factor"], r["high_freq_factor"] = rs.LowFreqFactor, rs.HighFreqFactor
			r["original_max_position_embeddings"] = rs.OriginalMaxPositions
		}
		obj["rope_scaling"] = r
	}
	raw, err := json.Marshal(obj)
	require.NoError(t, err)
	return raw
}

// FuzzParseConfig: any config.json is either refused with an input error
// or gives a Config that passes Validate, stays within the bounds (so
// sizes derived from it cannot overflow), has a finite positive RoPE
// table of head_dim/2 entries, and reads back identically from its own
// config.json. Beside stories260K's weights (when the test data is there)
// Load either refuses it with an input error, at once, or gives a model
// whose first logits are finite.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"../../shared/testdata/stories260K/config.json", "../../shared/testdata/minillama/config.json"} {
		if raw, err := os.ReadFile(filepath.FromSlash(p)); err == nil {
			f.Add(raw)
		}
	}
	for _, s := range []string{
		`{"model_type":"llama","hidden_size":128,"intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}`,
		`{"architectures":["MixtralForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":50,"num_local_experts":4,"num_experts_per_tok":2}`,
		`{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":50,"sliding_window":8}`,
		`{"model_type":"llama","hidden_size":128,"intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":2,"vocab_size":100,"rope_theta":500000,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}}`,
		`{"model_type":"llama","hidden_size":128,"intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,"rope_parameters":{"rope_type":"linear","factor":2,"rope_theta":1e6}}`,
		`{"model_type":"llama","hidden_size":128,"intermediate_size":256,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,"head_dim":4611686018427387904}`,
		`{"model_type":"llama","hidden_size":128,"intermediate_size":256,"num_hidden_layers":1099511627776,"num_attention_heads":4,"vocab_size":100}`,
		`{"model_type":"llama","hidden_size":128,"num_attention_heads":-4}`,
		`{"model_type":"llama","rope_scaling":{"type":"linear"}}`,
		`[1,2]`, `{`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	if w, err := filepath.Abs(filepath.Join(storiesDir, "model.safetensors")); err == nil {
		if _, err := os.Stat(w); err == nil {
			require.NoError(f, os.Symlink(w, filepath.Join(dir, "model.safetensors")))
		} else {
			dir = ""
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if dir != "" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644))
			if m, err := Load(dir, nil); err != nil {
				require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			} else {
				logits, err := m.NewSession(1, 2).Forward([][]int{{m.Config.BOS, 0}}, nil)
				require.NoError(t, err)
				for i, v := range logits {
					require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "logit %d = %v", i, v)
				}
				require.NoError(t, m.Close())
			}
		}
		c, err := ParseConfig(raw)
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			require.Nil(t, c)
			return
		}
		require.NoError(t, c.Validate())
		for _, v := range []int{c.Hidden, c.Intermediate, c.HeadDim, c.Vocab} {
			require.True(t, v > 0 && v <= MaxSize, "%+v", c)
		}
		for _, v := range []int{c.Layers, c.Heads, c.KVHeads} {
			require.True(t, v > 0 && v <= MaxCount, "%+v", c)
		}
		require.LessOrEqual(t, c.Experts, MaxExperts)
		if c.HeadDim <= 1<<12 { // larger tables are valid but slow to fuzz
			inv := c.InvFreq()
			require.Len(t, inv, c.HeadDim/2)
			for i, v := range inv {
				require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v < 0, "inv_freq[%d] = %v for %+v", i, v, c)
			}
		}
		back, err := ParseConfig(configJSON(t, c))
		require.NoError(t, err)
		require.Equal(t, c, back)
	})
}
