package qformat_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

func inputs() []qformat.Input {
	return []qformat.Input{
		{Name: "model.embed_tokens.weight", DType: safetensors.BF16, Shape: []int64{100, 64}},
		{Name: "model.layers.0.input_layernorm.weight", DType: safetensors.BF16, Shape: []int64{64}},
		{Name: "model.layers.0.self_attn.q_proj.weight", DType: safetensors.BF16, Shape: []int64{64, 64}},
		{Name: "model.layers.0.block_sparse_moe.experts.0.w2.weight", DType: safetensors.F32, Shape: []int64{64, 172}},
		{Name: "x.odd", DType: safetensors.F16, Shape: []int64{2, 3, 5}},
	}
}

func TestBuildLayout(t *testing.T) {
	rule, err := policy.ParseRule(`^x\.odd$=int4`)
	require.NoError(t, err)
	pol := policy.NewStatic([]policy.Rule{rule})
	p, err := qformat.Build(inputs(), pol.Decide, qformat.Options{GroupSize: 128, Config: []byte(`{"hidden_size": 64, "rms_norm_eps": 1e-05}`)})
	require.NoError(t, err)
	require.Len(t, p.Items, 5)

	emb := p.Items[0]
	assert.Equal(t, []safetensors.Spec{{Name: "model.embed_tokens.weight", DType: safetensors.F16, Shape: []int64{100, 64}}}, emb.Outputs)
	norm := p.Items[1]
	assert.Equal(t, qformat.Keep, norm.Record.Precision)
	assert.Equal(t, safetensors.BF16, norm.Outputs[0].DType)

	ex := p.Items[3]
	assert.Equal(t, "int4", ex.Record.Precision)
	assert.Equal(t, []safetensors.Spec{
		{Name: "model.layers.0.block_sparse_moe.experts.0.w2.weight.qweight", DType: safetensors.U8, Shape: []int64{64, 86}},
		{Name: "model.layers.0.block_sparse_moe.experts.0.w2.weight.scales", DType: safetensors.F16, Shape: []int64{64, 2}},
	}, ex.Outputs, "172 columns: 86 bytes per row, a full and a 44-wide group")

	odd := p.Items[4]
	assert.Equal(t, []int64{6, 3}, odd.Outputs[0].Shape, "rank 3 flattens to 6 rows; 5 columns pack into 3 bytes")

	var cfg map[string]any
	require.NoError(t, json.Unmarshal(p.Layout.Config, &cfg))
	qc := cfg["quantization_config"].(map[string]any)
	assert.Equal(t, "mixq", qc["quant_method"])
	assert.Equal(t, float64(128), qc["group_size"])
	assert.Contains(t, string(p.Layout.Config), `"rms_norm_eps": 1e-05`, "numbers are kept as written")

	est := p.Estimate(0)
	assert.Equal(t, qformat.DefaultTarget, est.TargetCompression)
	assert.Equal(t, int64(100*64+64+64*64+64*172+30), est.TotalParameters)
	assert.Equal(t, p.Layout.TotalBytes(), est.MixedPrecisionBytes)
	assert.Equal(t, est.MixedPrecisionBytes, est.TensorBytes+est.OverheadBytes)
}

func TestBuildRejectsImpossibleGroups(t *testing.T) {
	pol := policy.NewStatic(nil)
	for _, g := range []int{-1, quant.MaxGroupSize + 1} {
		_, err := qformat.Build(inputs(), pol.Decide, qformat.Options{GroupSize: g})
		assert.ErrorIs(t, err, quant.ErrInput, "group %d", g)
	}
}

// writeRaw writes a safetensors file with given tensors and metadata.
func writeRaw(t *testing.T, path string, specs []safetensors.Spec, md map[string]string) {
	t.Helper()
	w, err := safetensors.Create(path, specs, md)
	require.NoError(t, err)
	for _, s := range specs {
		require.NoError(t, w.Write(s.Name, make([]byte, s.Bytes())))
	}
	require.NoError(t, w.Close())
}

func TestReaderRejectsInconsistentFiles(t *testing.T) {
	rec := `{"precision":"int4","group_size":4,"dtype":"F32","shape":[2,8]}`
	qw := safetensors.Spec{Name: "w.qweight", DType: safetensors.U8, Shape: []int64{2, 4}}
	sc := safetensors.Spec{Name: "w.scales", DType: safetensors.F16, Shape: []int64{2, 2}}
	md := func(kv ...string) map[string]string {
		m := map[string]string{qformat.FormatKey: qformat.Format}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := map[string]struct {
		specs []safetensors.Spec
		md    map[string]string
		want  string
	}{
		"ok":             {[]safetensors.Spec{qw, sc}, md("mixq:w", rec), ""},
		"no format":      {[]safetensors.Spec{qw, sc}, map[string]string{"mixq:w": rec}, "not a mixq"},
		"future format":  {[]safetensors.Spec{qw, sc}, map[string]string{qformat.FormatKey: "mixq/9", "mixq:w": rec}, "not supported"},
		"missing scales": {[]safetensors.Spec{qw}, md("mixq:w", rec), "missing w.scales"},
		"no record":      {[]safetensors.Spec{qw, sc}, md(), "no mixq record"},
		"bad shape":      {[]safetensors.Spec{qw, sc}, md("mixq:w", `{"precision":"int4","group_size":4,"dtype":"F32","shape":[2,9]}`), "codes stored as"},
		"bad precision":  {[]safetensors.Spec{qw, sc}, md("mixq:w", `{"precision":"int3","group_size":4,"dtype":"F32","shape":[2,8]}`), "unknown precision"},
		"bad group":      {[]safetensors.Spec{qw, sc}, md("mixq:w", `{"precision":"int4","group_size":0,"dtype":"F32","shape":[2,8]}`), "group size"},
		"unknown field":  {[]safetensors.Spec{qw, sc}, md("mixq:w", `{"precision":"int4","group_size":4,"dtype":"F32","shape":[2,8],"x":1}`), "bad mixq record"},
		"orphan":         {[]safetensors.Spec{qw, sc, {Name: "z", DType: safetensors.F16, Shape: []int64{2}}}, md("mixq:w", rec), `"z": has no mixq record`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "m.safetensors")
			writeRaw(t, p, c.specs, c.md)
			m, err := qformat.Open(p)
			if c.want == "" {
				require.NoError(t, err)
				e, ok := m.Lookup("w")
				require.True(t, ok)
				assert.Equal(t, quant.INT4, e.Precision())
				require.NoError(t, m.Close())
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, quant.ErrInput)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// Output names are reserved: a quantized "a" writes "a.qweight" and
// "a.scales", so an input tensor of either name is refused, naming both.
func TestBuildRejectsCollidingNames(t *testing.T) {
	ins := []qformat.Input{
		{Name: "a", DType: safetensors.F32, Shape: []int64{8, 8}},
		{Name: "a.scales", DType: safetensors.F32, Shape: []int64{8, 2}},
	}
	decide := func(pt policy.Tensor) policy.Decision {
		if pt.Name == "a" {
			return policy.Decision{Name: pt.Name, Precision: quant.INT8}
		}
		return policy.Decision{Name: pt.Name, Precision: quant.F16}
	}
	_, err := qformat.Build(ins, decide, qformat.Options{GroupSize: 4})
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), `"a.scales"`)
	assert.Contains(t, err.Error(), "collides")
}

// The format's rules hold whatever a policy says: a policy that asks for
// INT8 everywhere still gets vectors, scalars and empty tensors kept.
func TestBuildKeepsVectorsWhateverThePolicy(t *testing.T) {
	ins := []qformat.Input{
		{Name: "scalar", DType: safetensors.F32, Shape: []int64{}},
		{Name: "vec", DType: safetensors.F32, Shape: []int64{5}},
		{Name: "empty", DType: safetensors.F32, Shape: []int64{0, 5}},
	}
	int8All := func(pt policy.Tensor) policy.Decision { return policy.Decision{Name: pt.Name, Precision: quant.INT8} }
	p, err := qformat.Build(ins, int8All, qformat.Options{})
	require.NoError(t, err)
	for _, it := range p.Items {
		assert.Equal(t, qformat.Keep, it.Record.Precision, it.Input.Name)
	}
}

// A kept tensor whose own name ends in ".qweight" reads back as itself.
func TestReaderPrefersExactRecords(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	writeRaw(t, p, []safetensors.Spec{{Name: "b.qweight", DType: safetensors.F32, Shape: []int64{3}}},
		map[string]string{qformat.FormatKey: qformat.Format, "mixq:b.qweight": `{"precision":"keep","dtype":"F32","shape":[3]}`})
	m, err := qformat.Open(p)
	require.NoError(t, err)
	defer m.Close()
	e, ok := m.Lookup("b.qweight")
	require.True(t, ok)
	assert.Equal(t, qformat.Keep, e.Record.Precision)
}

// A policy may choose each quantized tensor's group size: the record, the
// layout and the scales follow it, and config.json counts the group sizes
// once they are mixed.
func TestBuildPerTensorGroupSize(t *testing.T) {
	decide := func(x policy.Tensor) policy.Decision {
		d := policy.Decision{Name: x.Name, Precision: quant.INT4}
		switch x.Name {
		case "model.layers.0.self_attn.q_proj.weight":
			d.GroupSize = 32
		case "x.odd":
			d.Precision = quant.F16
		}
		return d
	}
	p, err := qformat.Build(inputs(), decide, qformat.Options{GroupSize: 128})
	require.NoError(t, err)
	q := p.Items[2]
	assert.Equal(t, 32, q.Record.GroupSize)
	assert.Equal(t, 32, q.Layout.GroupSize)
	assert.Equal(t, []int64{64, 2}, q.Outputs[1].Shape, "64 columns in groups of 32: two scales per row")
	assert.Equal(t, 128, p.Items[0].Record.GroupSize, "0 means the plan's group size")
	var cfg struct {
		Q struct {
			GroupSize  int            `json:"group_size"`
			GroupSizes map[string]int `json:"group_sizes"`
		} `json:"quantization_config"`
	}
	require.NoError(t, json.Unmarshal(p.Layout.Config, &cfg))
	assert.Equal(t, 128, cfg.Q.GroupSize)
	assert.Equal(t, map[string]int{"32": 1, "128": 2}, cfg.Q.GroupSizes)

	// One group size throughout: no group_sizes, as before.
	p, err = qformat.Build(inputs(), func(x policy.Tensor) policy.Decision {
		return policy.Decision{Name: x.Name, Precision: quant.INT8, GroupSize: 128}
	}, qformat.Options{GroupSize: 128})
	require.NoError(t, err)
	assert.NotContains(t, string(p.Layout.Config), "group_sizes")

	_, err = qformat.Build(inputs(), func(x policy.Tensor) policy.Decision {
		return policy.Decision{Name: x.Name, Precision: quant.INT8, GroupSize: -4}
	}, qformat.Options{GroupSize: 128})
	assert.ErrorContains(t, err, "impossible group size -4")
}
