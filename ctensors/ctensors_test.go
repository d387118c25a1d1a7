package ctensors

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/safetensors"
)

// Worked examples from compressed-tensors' pack_to_int32 (pack_quantized.py):
// its docstring packs [1, 2] at 8 bits as [129, 130, 0, 0] → 33409; the
// others apply the same rule (value + 2^(bits-1), code k in bits
// [k·bits, (k+1)·bits) of its word, zero padding) by hand.
func TestPackToInt32WorkedExamples(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bits  int
		codes []int8
		want  []uint32
	}{
		{"docstring, 8 bits", 8, []int8{1, 2}, []uint32{33409}},
		{"8 bits, full word", 8, []int8{-127, 0, 127, -1}, []uint32{0x7fff8001}},
		// -8..-1 → 0..7 and 0..7 → 8..15: the nibbles in order, low first.
		{"4 bits, two words", 4, []int8{-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7}, []uint32{0x76543210, 0xfedcba98}},
		{"4 bits, padded", 4, []int8{7, -7, 0}, []uint32{0x0000081f}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]uint32, len(tc.want))
			PackRow(got, tc.codes, tc.bits)
			assert.Equal(t, tc.want, got)
			back := make([]int8, len(tc.codes))
			UnpackRow(back, got, tc.bits)
			assert.Equal(t, tc.codes, back, "unpack_from_int32 inverts it")
		})
	}
	// As int32 (the stored dtype), the second 4-bit word is negative.
	w := uint32(0xfedcba98)
	assert.Equal(t, int32(-0x01234568), int32(w))
}

func rec(p string, g int, dt safetensors.DType, shape ...int64) qformat.Record {
	return qformat.Record{Precision: p, GroupSize: g, DType: dt, Shape: shape}
}

func TestPlan(t *testing.T) {
	srcs := []Tensor{
		{"model.embed_tokens.weight", rec("int8", 32, "BF16", 16, 64)},
		{"model.layers.0.self_attn.q_proj.weight", rec("int4", 32, "BF16", 64, 64)},
		{"model.layers.0.self_attn.k_proj.weight", rec("int8", 64, "BF16", 32, 64)},
		{"model.layers.0.self_attn.v_proj.weight", rec("int8", 48, "BF16", 32, 64)}, // 64 % 48 ≠ 0
		{"model.layers.0.self_attn.o_proj.weight", rec("f16", 0, "BF16", 64, 64)},
		{"model.layers.0.block_sparse_moe.gate.weight", rec("int8", 32, "BF16", 4, 64)},
		{"model.layers.0.block_sparse_moe.experts.0.w1.weight", rec("int4", 32, "BF16", 96, 64)},
		{"model.layers.0.input_layernorm.weight", rec("keep", 0, "BF16", 64)},
		{"lm_head.weight", rec("f32", 0, "BF16", 16, 64)},
	}
	x, err := Plan([]byte(`{"architectures": ["MixtralForCausalLM"], "quantization_config": {"quant_method": "mixq"}, "torch_dtype": "bfloat16"}`), srcs, Options{})
	require.NoError(t, err)
	specs := map[string]safetensors.Spec{}
	for _, sh := range x.Layout.Shards {
		for _, s := range sh.Specs {
			specs[s.Name] = s
		}
	}
	for name, want := range map[string]safetensors.Spec{
		"model.layers.0.self_attn.q_proj.weight_packed":              {DType: safetensors.I32, Shape: []int64{64, 8}},
		"model.layers.0.self_attn.q_proj.weight_scale":               {DType: safetensors.F16, Shape: []int64{64, 2}},
		"model.layers.0.self_attn.q_proj.weight_shape":               {DType: safetensors.I64, Shape: []int64{2}},
		"model.layers.0.self_attn.k_proj.weight_packed":              {DType: safetensors.I32, Shape: []int64{32, 16}},
		"model.layers.0.self_attn.k_proj.weight_scale":               {DType: safetensors.F16, Shape: []int64{32, 1}},
		"model.layers.0.self_attn.v_proj.weight":                     {DType: safetensors.F32, Shape: []int64{32, 64}},
		"model.layers.0.self_attn.o_proj.weight":                     {DType: safetensors.F16, Shape: []int64{64, 64}},
		"model.embed_tokens.weight":                                  {DType: safetensors.F32, Shape: []int64{16, 64}},
		"model.layers.0.block_sparse_moe.gate.weight":                {DType: safetensors.F32, Shape: []int64{4, 64}},
		"model.layers.0.block_sparse_moe.experts.0.w1.weight_packed": {DType: safetensors.I32, Shape: []int64{96, 8}},
		"model.layers.0.input_layernorm.weight":                      {DType: safetensors.BF16, Shape: []int64{64}},
		"lm_head.weight":                                             {DType: safetensors.F32, Shape: []int64{16, 64}},
	} {
		got, ok := specs[name]
		if assert.True(t, ok, name) {
			assert.Equal(t, want.DType, got.DType, name)
			assert.Equal(t, want.Shape, got.Shape, name)
		}
	}
	var cfg struct {
		TorchDType string `json:"torch_dtype"`
		QC         struct {
			QuantMethod  string `json:"quant_method"`
			ConfigGroups map[string]struct {
				Targets []string       `json:"targets"`
				Weights map[string]any `json:"weights"`
			} `json:"config_groups"`
			Ignore []string `json:"ignore"`
		} `json:"quantization_config"`
	}
	require.NoError(t, json.Unmarshal(x.Layout.Config, &cfg))
	assert.Equal(t, "float16", cfg.TorchDType)
	assert.Equal(t, "compressed-tensors", cfg.QC.QuantMethod)
	require.Len(t, cfg.QC.ConfigGroups, 2)
	assert.Equal(t, []string{"model.layers.0.block_sparse_moe.experts.0.w1", "model.layers.0.self_attn.q_proj"}, cfg.QC.ConfigGroups["group_0"].Targets)
	assert.Equal(t, float64(4), cfg.QC.ConfigGroups["group_0"].Weights["num_bits"])
	assert.Equal(t, []string{"model.layers.0.self_attn.k_proj"}, cfg.QC.ConfigGroups["group_1"].Targets)
	assert.Equal(t, float64(64), cfg.QC.ConfigGroups["group_1"].Weights["group_size"])
	assert.Equal(t, []string{"lm_head", "model.layers.0.block_sparse_moe.gate", "model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.v_proj"}, cfg.QC.Ignore)
	assert.Len(t, x.Notices, 3, "embeddings, router and v_proj are dequantized")
}

// A group longer than the row is the row: tiny models with group 128 and
// rows of 64 are packed as group 64, one scale per row.
func TestLongGroupIsTheRow(t *testing.T) {
	x, err := Plan(nil, []Tensor{{"model.layers.0.mlp.up_proj.weight", rec("int4", 128, "F32", 96, 64)}}, Options{})
	require.NoError(t, err)
	assert.Empty(t, x.Notices)
	var cfg struct {
		QC struct {
			ConfigGroups map[string]struct {
				Weights struct {
					GroupSize int `json:"group_size"`
				} `json:"weights"`
			} `json:"config_groups"`
		} `json:"quantization_config"`
	}
	require.NoError(t, json.Unmarshal(x.Layout.Config, &cfg))
	assert.Equal(t, 64, cfg.QC.ConfigGroups["group_0"].Weights.GroupSize)
	assert.Equal(t, []int64{96, 1}, x.Layout.Shards[0].Specs[1].Shape)
}
