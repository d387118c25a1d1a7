package synth

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

func TestPresetsOrder(t *testing.T) {
	var names []string
	for _, p := range Presets() {
		names = append(names, p.Name)
		assert.NoError(t, p.Validate())
		assert.NotEmpty(t, p.Description)
	}
	assert.Equal(t, []string{"tiny-moe", "tiny", "seed", "llama7b-layer"}, names)
	_, err := Lookup(DefaultPreset)
	assert.NoError(t, err)

	// Presets returns a copy.
	ps := Presets()
	ps[0].Name = "changed"
	assert.Equal(t, "tiny-moe", Presets()[0].Name)
}

func TestLookup(t *testing.T) {
	for _, p := range Presets() {
		got, err := Lookup(p.Name)
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	_, err := Lookup("llama")
	require.Error(t, err)
	assert.True(t, errors.Is(err, quant.ErrInput))
	assert.Contains(t, err.Error(), `"llama"`)
	for _, p := range Presets() {
		assert.Contains(t, err.Error(), p.Name)
	}
}

func TestValidate(t *testing.T) {
	tiny, _ := Lookup("tiny")
	moe, _ := Lookup("tiny-moe")
	for _, c := range []struct {
		name string
		p    Preset
		want string
	}{
		{"zero layers", tiny.WithLayers(0), "layers must be positive"},
		{"heads", func() Preset { p := tiny; p.Heads = 5; return p }(), "heads (5) must divide hidden (64)"},
		{"kv heads", func() Preset { p := tiny; p.KVHeads = 3; return p }(), "kv heads (3) must divide heads (4)"},
		{"llama experts", func() Preset { p := tiny; p.Experts = 2; return p }(), "a llama has no experts"},
		{"mixtral top-k", func() Preset { p := moe; p.ExpertsPerToken = 5; return p }(), "experts per token"},
		{"arch", func() Preset { p := tiny; p.Arch = "gpt2"; return p }(), `unknown arch "gpt2"`},
	} {
		err := c.p.Validate()
		require.Error(t, err, c.name)
		assert.Contains(t, err.Error(), c.want, c.name)
		assert.True(t, errors.Is(err, quant.ErrInput), c.name)
	}
}

// TestParameters gives the size of every preset, counted by hand from the
// architecture.
func TestParameters(t *testing.T) {
	for _, c := range []struct {
		name   string
		params int64
	}{
		// per layer: 2 norms 2·64, attention 2·64·64 + 2·32·64, router 4·64,
		// experts 4·3·128·64; plus embed and lm_head 2·256·64 and a norm.
		{"tiny-moe", 2*(128+12288+256+98304) + 2*16384 + 64},
		// tied: one 256·64 table; MLP 3·172·64.
		{"tiny", 2*(128+12288+3*172*64) + 16384 + 64},
		// per layer: norms 1024, attention 4·512², router 8·512,
		// experts 8·3·1024·512; embed and lm_head 2·30000·512.
		{"seed", 12*(1024+4*512*512+8*512+8*3*1024*512) + 2*30000*512 + 512},
		// attention 4·4096², MLP 3·4096·11008, norms 2·4096.
		{"llama7b-layer", 4*4096*4096 + 3*4096*11008 + 2*4096},
	} {
		p, err := Lookup(c.name)
		require.NoError(t, err)
		assert.Equal(t, c.params, p.Parameters(), c.name)
		var f32 int64
		for _, s := range p.Specs(safetensors.F32) {
			f32 += s.Bytes()
		}
		assert.Equal(t, 4*c.params, f32, c.name)
		t.Logf("%-14s %13d parameters, %14d bytes in F32", c.name, c.params, f32)
	}
	seed, _ := Lookup("seed")
	assert.Equal(t, int64(194_359_808), seed.Parameters())
	l7, _ := Lookup("llama7b-layer")
	assert.Equal(t, 10*l7.Parameters(), l7.WithLayers(10).Parameters())
}

var (
	llamaName = regexp.MustCompile(`^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm|self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$`)
	moeName   = regexp.MustCompile(`^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm|self_attn\.[qkvo]_proj|block_sparse_moe\.gate|block_sparse_moe\.experts\.(\d+)\.w[123])\.weight$`)
)

// TestSpecs checks the names, order and shapes of every preset against the
// Hugging Face conventions.
func TestSpecs(t *testing.T) {
	for _, p := range Presets() {
		t.Run(p.Name, func(t *testing.T) {
			specs := p.Specs("")
			h, in, v := int64(p.Hidden), int64(p.Intermediate), int64(p.Vocab)
			kv := int64(p.KVHeads * p.Hidden / p.Heads)
			want := []safetensors.Spec{}
			add := func(name string, shape ...int64) {
				want = append(want, safetensors.Spec{Name: name, DType: safetensors.BF16, Shape: shape})
			}
			if !p.NoEmbeddings {
				add("model.embed_tokens.weight", v, h)
			}
			for l := range p.Layers {
				pre := fmt.Sprintf("model.layers.%d.", l)
				add(pre+"input_layernorm.weight", h)
				add(pre+"self_attn.q_proj.weight", h, h)
				add(pre+"self_attn.k_proj.weight", kv, h)
				add(pre+"self_attn.v_proj.weight", kv, h)
				add(pre+"self_attn.o_proj.weight", h, h)
				add(pre+"post_attention_layernorm.weight", h)
				if p.Experts == 0 {
					add(pre+"mlp.gate_proj.weight", in, h)
					add(pre+"mlp.up_proj.weight", in, h)
					add(pre+"mlp.down_proj.weight", h, in)
					continue
				}
				add(pre+"block_sparse_moe.gate.weight", int64(p.Experts), h)
				for e := range p.Experts {
					ex := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", pre, e)
					add(ex+"w1.weight", in, h)
					add(ex+"w2.weight", h, in)
					add(ex+"w3.weight", in, h)
				}
			}
			if !p.NoEmbeddings {
				add("model.norm.weight", h)
				if !p.TieEmbeddings {
					add("lm_head.weight", v, h)
				}
			}
			assert.Equal(t, want, specs)

			re := llamaName
			if p.Arch == ArchMixtral {
				re = moeName
			}
			seen := map[string]bool{}
			for _, s := range specs {
				assert.False(t, seen[s.Name], "duplicate %s", s.Name)
				seen[s.Name] = true
				switch s.Name {
				case "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight":
				default:
					assert.Regexp(t, re, s.Name)
				}
			}
			assert.Equal(t, !p.TieEmbeddings && !p.NoEmbeddings, seen["lm_head.weight"])
			assert.Equal(t, !p.NoEmbeddings, seen["model.embed_tokens.weight"])
		})
	}
	tiny, _ := Lookup("tiny")
	for _, s := range tiny.Specs(safetensors.F16) {
		assert.Equal(t, safetensors.F16, s.DType)
	}
}

func TestWithLayers(t *testing.T) {
	l7, _ := Lookup("llama7b-layer")
	p := l7.WithLayers(3)
	assert.Equal(t, 3, p.Layers)
	assert.Equal(t, "llama7b-layer", p.Name)
	assert.Equal(t, 1, l7.Layers, "WithLayers must not modify its receiver")
	specs := p.Specs(safetensors.BF16)
	assert.Len(t, specs, 3*9)
	assert.Equal(t, "model.layers.2.mlp.down_proj.weight", specs[len(specs)-1].Name)
	var bytes int64
	for _, s := range l7.WithLayers(11).Specs(safetensors.BF16) {
		bytes += s.Bytes()
	}
	assert.Greater(t, bytes, int64(4<<30), "eleven layers in BF16 exceed 4 GiB")
}

func TestConfig(t *testing.T) {
	for _, p := range Presets() {
		for _, dt := range []safetensors.DType{"", safetensors.F32, safetensors.F16, safetensors.BF16} {
			b, err := p.Config(dt)
			require.NoError(t, err)
			assert.Equal(t, byte('\n'), b[len(b)-1])
			assert.Contains(t, string(b), "\n  \"", "indented")
			var c map[string]any
			require.NoError(t, json.Unmarshal(b, &c), "%s", b)
			arch, typ := "LlamaForCausalLM", "llama"
			if p.Arch == ArchMixtral {
				arch, typ = "MixtralForCausalLM", "mixtral"
				assert.EqualValues(t, p.Experts, c["num_local_experts"])
				assert.EqualValues(t, p.ExpertsPerToken, c["num_experts_per_tok"])
			} else {
				assert.NotContains(t, c, "num_local_experts")
				assert.NotContains(t, c, "num_experts_per_tok")
			}
			assert.Equal(t, []any{arch}, c["architectures"])
			assert.Equal(t, typ, c["model_type"])
			assert.EqualValues(t, p.Hidden, c["hidden_size"])
			assert.EqualValues(t, p.Intermediate, c["intermediate_size"])
			assert.EqualValues(t, p.Layers, c["num_hidden_layers"])
			assert.EqualValues(t, p.Heads, c["num_attention_heads"])
			assert.EqualValues(t, p.KVHeads, c["num_key_value_heads"])
			assert.EqualValues(t, p.Vocab, c["vocab_size"])
			assert.Equal(t, 1e-5, c["rms_norm_eps"])
			assert.EqualValues(t, 10000, c["rope_theta"])
			assert.Equal(t, p.TieEmbeddings, c["tie_word_embeddings"])
			assert.Contains(t, c, "max_position_embeddings")
			want := map[safetensors.DType]string{"": "bfloat16", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dt]
			assert.Equal(t, want, c["torch_dtype"])
		}
	}
	tiny, _ := Lookup("tiny")
	_, err := tiny.Config(safetensors.I8)
	assert.True(t, errors.Is(err, quant.ErrInput))
	_, err = tiny.WithLayers(-1).Config(safetensors.F32)
	assert.True(t, errors.Is(err, quant.ErrInput))
}
