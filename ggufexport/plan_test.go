package ggufexport

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/gguf"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
)

// convert_hf_to_gguf.py's permute reshapes rows as [heads][2][hd/2] and
// swaps the last two axes. Built here literally, it must agree with srcRow
// for every row.
func TestPermuteMatchesConvert(t *testing.T) {
	for _, tc := range []struct{ heads, hd int }{{1, 4}, {2, 8}, {4, 32}, {3, 2}} {
		rows := tc.heads * tc.hd
		// want[new] = old, from the reshape/swap definition.
		want := make([]int64, rows)
		for h := 0; h < tc.heads; h++ {
			for two := 0; two < 2; two++ {
				for i := 0; i < tc.hd/2; i++ {
					old := h*tc.hd + two*(tc.hd/2) + i // index in [heads][2][hd/2]
					nw := h*tc.hd + i*2 + two          // index in [heads][hd/2][2]
					want[nw] = int64(old)
				}
			}
		}
		tt := &Tensor{Heads: tc.heads, Rows: int64(rows)}
		for r := range want {
			assert.Equal(t, want[r], srcRow(int64(r), tt), "heads %d hd %d row %d", tc.heads, tc.hd, r)
		}
	}
	// hd 4, one head: rotate_half rows [a0 a1 b0 b1] interleave to [a0 b0 a1 b1].
	tt := &Tensor{Heads: 1, Rows: 4}
	assert.Equal(t, []int64{0, 2, 1, 3}, []int64{srcRow(0, tt), srcRow(1, tt), srcRow(2, tt), srcRow(3, tt)})
}

const mixtralConfig = `{"architectures": ["MixtralForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32,
  "num_local_experts": 2, "num_experts_per_tok": 1, "max_position_embeddings": 128,
  "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 64}}`

func rec(p string, g int, shape ...int64) qformat.Record {
	return qformat.Record{Precision: p, GroupSize: g, DType: "F32", Shape: shape}
}

func mixtralSources() []Source {
	return []Source{
		{"model.embed_tokens.weight", rec("int8", 32, 32, 64)},
		{"model.layers.0.input_layernorm.weight", rec("keep", 0, 64)},
		{"model.layers.0.self_attn.q_proj.weight", rec("int4", 64, 64, 64)},
		{"model.layers.0.self_attn.k_proj.weight", rec("int4", 64, 32, 64)},
		{"model.layers.0.self_attn.v_proj.weight", rec("int8", 16, 32, 64)}, // group 16: F16
		{"model.layers.0.self_attn.o_proj.weight", rec("f16", 0, 64, 64)},
		{"model.layers.0.block_sparse_moe.gate.weight", rec("f32", 0, 2, 64)},
		{"model.layers.0.block_sparse_moe.experts.1.w1.weight", rec("int8", 32, 96, 64)},
		{"model.layers.0.block_sparse_moe.experts.0.w1.weight", rec("int4", 32, 96, 64)},
		{"model.layers.0.block_sparse_moe.experts.0.w2.weight", rec("int4", 32, 64, 96)},
		{"model.layers.0.block_sparse_moe.experts.1.w2.weight", rec("int4", 128, 64, 96)},
		{"model.layers.0.block_sparse_moe.experts.0.w3.weight", rec("int4", 32, 96, 64)},
		{"model.layers.0.block_sparse_moe.experts.1.w3.weight", rec("f16", 0, 96, 64)},
		{"model.layers.0.post_attention_layernorm.weight", rec("keep", 0, 64)},
		{"model.norm.weight", rec("keep", 0, 64)},
	}
}

func TestPlanMixtral(t *testing.T) {
	x, err := Plan([]byte(mixtralConfig), mixtralSources(), Options{NoVocab: true, TokenizerDir: t.TempDir()})
	require.NoError(t, err)
	got := map[string]gguf.TensorInfo{}
	for _, ti := range x.Layout.Tensors {
		got[ti.Name] = ti
	}
	for name, want := range map[string]struct {
		typ  gguf.GGMLType
		dims []uint64
	}{
		"token_embd.weight":          {gguf.Q8_0, []uint64{64, 32}},
		"blk.0.attn_norm.weight":     {gguf.F32, []uint64{64}},
		"blk.0.attn_q.weight":        {gguf.Q4_0, []uint64{64, 64}},
		"blk.0.attn_k.weight":        {gguf.Q4_0, []uint64{64, 32}},
		"blk.0.attn_v.weight":        {gguf.F16, []uint64{64, 32}},
		"blk.0.attn_output.weight":   {gguf.F16, []uint64{64, 64}},
		"blk.0.ffn_gate_inp.weight":  {gguf.F32, []uint64{64, 2}},
		"blk.0.ffn_gate_exps.weight": {gguf.Q8_0, []uint64{64, 96, 2}}, // INT4 + INT8: Q8_0
		"blk.0.ffn_down_exps.weight": {gguf.Q4_0, []uint64{96, 64, 2}}, // groups 32 and 96→128 both fine
		"blk.0.ffn_up_exps.weight":   {gguf.F32, []uint64{64, 96, 2}},  // INT4 + F16: F32
		"blk.0.ffn_norm.weight":      {gguf.F32, []uint64{64}},
		"output_norm.weight":         {gguf.F32, []uint64{64}},
		"rope_freqs.weight":          {gguf.F32, []uint64{8}},
	} {
		ti, ok := got[name]
		if assert.True(t, ok, name) {
			assert.Equal(t, want.typ, ti.Type, name)
			assert.Equal(t, want.dims, ti.Dims, name)
		}
	}
	assert.Len(t, got, 13)
	// Experts are stacked in expert order whatever the file order.
	for _, tt := range x.Tensors {
		if tt.Name == "blk.0.ffn_gate_exps.weight" {
			assert.Equal(t, "model.layers.0.block_sparse_moe.experts.0.w1.weight", tt.Parts[0].Name)
		}
		if tt.Name == "blk.0.attn_k.weight" {
			assert.Equal(t, 2, tt.Heads, "K is permuted with the KV head count")
		}
	}
	assert.Contains(t, x.Notices, "model.layers.0.self_attn.v_proj.weight (int8) is written as F16 (values rounded to f16) because its group size 16 is not a multiple of 32")
	kv := map[string]any{}
	for _, e := range x.Layout.KVs {
		kv[e.Key] = e.Value
	}
	assert.Equal(t, uint32(2), kv["llama.expert_count"])
	assert.Equal(t, uint32(1), kv["llama.expert_used_count"])
	assert.Equal(t, uint32(2), kv["llama.attention.head_count_kv"])
	assert.Equal(t, uint32(32), kv["llama.vocab_size"])
	assert.Equal(t, uint32(16), kv["llama.rope.dimension_count"])
	assert.Equal(t, "none", kv["tokenizer.ggml.model"])
	// llama3 factors: 1 for short wavelengths, the factor for long ones.
	f := x.Tensors[len(x.Tensors)-1].Generated
	assert.Equal(t, float32(1), f[0])
	assert.Equal(t, float32(8), f[len(f)-1])
}

func TestPlanErrors(t *testing.T) {
	base := mixtralSources()
	for name, tc := range map[string]struct {
		config string
		srcs   []Source
		want   string
	}{
		"architecture":   {`{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64}`, base, "Qwen2ForCausalLM"},
		"unknown tensor": {mixtralConfig, append(base[:len(base):len(base)], Source{"model.layers.0.self_attn.q_norm.weight", rec("keep", 0, 16)}), "model.layers.0.self_attn.q_norm.weight"},
		"missing expert": {mixtralConfig, append(append([]Source{}, base[:12]...), base[13:]...), "blk.0.ffn_up_exps.weight"},
		"no embedding":   {mixtralConfig, base[1:], "embed_tokens"},
		"no norm":        {mixtralConfig, base[:len(base)-1], "output_norm.weight"},
		"no layer 1":     {strings.Replace(mixtralConfig, `"num_hidden_layers": 1`, `"num_hidden_layers": 2`, 1), base, "blk.1.attn_norm.weight"},
		"no config":      {"", base, "config.json"},
		"bad heads":      {mixtralConfig, append(append([]Source{}, base[:2]...), Source{"model.layers.0.self_attn.q_proj.weight", rec("int4", 32, 60, 64)}), "heads"},
	} {
		t.Run(name, func(t *testing.T) {
			var cfg []byte
			if tc.config != "" {
				cfg = []byte(tc.config)
			}
			_, err := Plan(cfg, tc.srcs, Options{NoVocab: true, TokenizerDir: t.TempDir()})
			require.Error(t, err)
			assert.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			assert.ErrorContains(t, err, tc.want)
		})
	}
	// No tokenizer without --no-vocab: a clear message.
	_, err := Plan([]byte(mixtralConfig), base, Options{TokenizerDir: t.TempDir()})
	assert.ErrorContains(t, err, "no tokenizer.model or tokenizer.json")
	assert.ErrorContains(t, err, "--vocab-from")
}
