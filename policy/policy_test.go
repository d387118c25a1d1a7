package policy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

func TestBuiltinRules(t *testing.T) {
	mat := []int64{8, 8}
	cases := []struct {
		name string
		want quant.Precision
		rule string
	}{
		{"model.layers.0.block_sparse_moe.experts.3.w1.weight", quant.INT4, "builtin:moe-experts"},
		{"model.layers.0.block_sparse_moe.experts.7.w2.weight", quant.INT4, "builtin:moe-experts"},
		{"model.layers.11.mlp.experts.15.down_proj.weight", quant.INT4, "builtin:moe-experts"},
		{"model.layers.1.mlp.shared_experts.up_proj.weight", quant.INT4, "builtin:moe-experts"},
		{"transformer.h.0.moe.experts.0.fc.weight", quant.INT4, "builtin:moe-experts"},
		{"model.layers.0.block_sparse_moe.gate.weight", quant.INT8, "builtin:default"},
		{"model.layers.0.self_attn.q_proj.weight", quant.INT8, "builtin:core-attention"},
		{"layers.3.attention.wq.weight", quant.INT8, "builtin:core-attention"},
		{"blocks.2.bk_core.proj.weight", quant.INT8, "builtin:core-attention"},
		{"lm_head.weight", quant.F16, "builtin:output-head"},
		{"output.weight", quant.F16, "builtin:output-head"},
		{"model.embed_tokens.weight", quant.F16, "builtin:embeddings"},
		{"transformer.wte.weight", quant.F16, "builtin:embeddings"},
		{"tok_embeddings.weight", quant.F16, "builtin:embeddings"},
		{"model.layers.0.mlp.down_proj.weight", quant.INT8, "builtin:default"},
		// "output" inside a name is not the head.
		{"encoder.layer.0.attention.output.dense.weight", quant.INT8, "builtin:core-attention"},
	}
	s := NewStatic(nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(Tensor{Name: c.name, Shape: mat})
			require.False(t, d.Keep)
			assert.Equal(t, c.want, d.Precision)
			assert.Equal(t, c.rule, d.Source)
		})
	}
}

func TestVectorsAreKept(t *testing.T) {
	s := NewStatic([]Rule{mustRule(t, "norm=int4")})
	for _, shape := range [][]int64{{64}, {}} {
		d := s.Decide(Tensor{Name: "model.norm.weight", Shape: shape})
		assert.True(t, d.Keep)
		assert.Contains(t, d.Reason, "kept")
	}
}

func TestUserRulesFirstMatchWins(t *testing.T) {
	s := NewStatic([]Rule{mustRule(t, `layers\.0\.=f32`), mustRule(t, `q_proj=int4`)})
	assert.Equal(t, quant.F32, s.Decide(Tensor{"model.layers.0.self_attn.q_proj.weight", []int64{4, 4}}).Precision)
	d := s.Decide(Tensor{"model.layers.1.self_attn.q_proj.weight", []int64{4, 4}})
	assert.Equal(t, quant.INT4, d.Precision)
	assert.Equal(t, "flag", d.Source)
	assert.Equal(t, "q_proj=int4", d.Rule)
}

func TestTiedEmbeddings(t *testing.T) {
	names := []string{"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"}
	require.Equal(t, "model.embed_tokens.weight", TiedHead(names))
	require.Equal(t, "", TiedHead(append(names, "lm_head.weight")))

	// A user rule that narrows the embeddings does not narrow the head role.
	s := NewStatic([]Rule{mustRule(t, "embed_tokens=int4")})
	s.TiedHead = TiedHead(names)
	d := s.Decide(Tensor{"model.embed_tokens.weight", []int64{512, 64}})
	assert.Equal(t, quant.F16, d.Precision)
	assert.Equal(t, "builtin:output-head", d.Source)
	assert.Contains(t, d.Reason, "tied")

	// A rule on lm_head applies to the tied matrix when it is wider.
	s = NewStatic([]Rule{mustRule(t, "lm_head=f32")})
	s.TiedHead = TiedHead(names)
	assert.Equal(t, quant.F32, s.Decide(Tensor{"model.embed_tokens.weight", []int64{512, 64}}).Precision)
}

func TestParseRule(t *testing.T) {
	r, err := ParseRule(`a=b=int4`)
	require.NoError(t, err)
	assert.Equal(t, "a=b", r.Pattern)
	assert.Equal(t, quant.INT4, r.Precision)
	for _, bad := range []string{"", "=int4", "x=", "x=int3", "(=int8", "noequals"} {
		_, err := ParseRule(bad)
		assert.Error(t, err, bad)
		assert.ErrorIs(t, err, quant.ErrInput, bad)
	}
}

func TestLoadRules(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	rs, err := LoadRules(write("a.json", `{"rules":[{"pattern":"q_proj","precision":"int4"},{"pattern":"v_proj","precision":"fp16"}]}`))
	require.NoError(t, err)
	require.Len(t, rs, 2)
	assert.Equal(t, quant.F16, rs[1].Precision)
	assert.Contains(t, rs[0].Source, "file:")

	rs, err = LoadRules(write("b.json", `[{"pattern":"x","precision":"int8"}]`))
	require.NoError(t, err)
	require.Len(t, rs, 1)

	for name, body := range map[string]string{
		"c.json": `{"rules":[{"pattern":"(","precision":"int4"}]}`,
		"d.json": `{"rules":[{"pattern":"x","precision":"int2"}]}`,
		"e.json": `{"rulez":[]}`,
		"f.json": `{"rules":[{"precision":"int4"}]}`,
	} {
		_, err := LoadRules(write(name, body))
		assert.ErrorIs(t, err, quant.ErrInput, name)
	}
}

func TestClassify(t *testing.T) {
	for name, want := range map[string]Component{
		"model.layers.0.block_sparse_moe.experts.0.w1.weight": Experts,
		"model.layers.0.block_sparse_moe.gate.weight":         Router,
		"model.layers.0.self_attn.k_proj.weight":              Attention,
		"model.layers.0.mlp.up_proj.weight":                   MLP,
		"model.layers.0.input_layernorm.weight":               Norm,
		"model.norm.weight":                                   Norm,
		"model.embed_tokens.weight":                           Embeddings,
		"lm_head.weight":                                      Head,
		"something.else":                                      Other,
	} {
		assert.Equal(t, want, Classify(name), name)
	}
}

func mustRule(t *testing.T, s string) Rule {
	t.Helper()
	r, err := ParseRule(s)
	require.NoError(t, err)
	return r
}
