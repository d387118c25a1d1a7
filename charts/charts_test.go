package charts

import (
	"bytes"
	"image/png"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
)

// report builds a small report by hand: two layers and a tied embedding.
func report() *importance.Report {
	r := &importance.Report{Policy: "test"}
	add := func(name string, comp policy.Component, score float64, prec string) {
		var cands []importance.Candidate
		for i, p := range importance.Candidates {
			cands = append(cands, importance.Candidate{Precision: p, Bytes: int64(1000 * (i + 1)), RelError: 0.01 / float64(100*i+1), Feasible: true})
		}
		r.Tensors = append(r.Tensors, importance.TensorReport{Name: name, Shape: []int64{8, 8}, Component: comp, Matrix: true, Score: score, Precision: prec, Candidates: cands})
	}
	add("model.embed_tokens.weight", policy.Embeddings, 1, "f16")
	for l, p := range []string{"int4", "int8"} {
		pre := "model.layers." + string(rune('0'+l)) + "."
		add(pre+"self_attn.q_proj.weight", policy.Attention, 0.5, p)
		add(pre+"mlp.down_proj.weight", policy.MLP, 0.2, quant.INT4.String())
	}
	r.Tensors = append(r.Tensors, importance.TensorReport{Name: "model.norm.weight", Shape: []int64{8}, Component: policy.Norm, Precision: "keep"})
	return r
}

func TestChartsArePNGs(t *testing.T) {
	cs, err := All(report())
	require.NoError(t, err)
	require.Len(t, cs, 3)
	for _, c := range cs {
		img, err := png.Decode(bytes.NewReader(c.PNG))
		require.NoError(t, err, c.Name)
		require.Greater(t, img.Bounds().Dx(), 100, c.Name)
	}
}

func TestPositions(t *testing.T) {
	pos, n := positions(report())
	require.Equal(t, 2, n)
	require.Equal(t, position{-1, "model.embed_tokens.weight"}, pos["model.embed_tokens.weight"])
	require.Equal(t, position{1, "self_attn.q_proj"}, pos["model.layers.1.self_attn.q_proj.weight"])
	require.Equal(t, 2, pos["model.norm.weight"].layer, "after the layers")
}

// Checkpoints without "layers.N." names (GPT-2 style) still get charts, and
// a report without matrices gets none rather than an error.
func TestChartsWithoutLayers(t *testing.T) {
	r := &importance.Report{Policy: "test"}
	for _, n := range []string{"transformer.h.0.attn.c_attn.weight", "transformer.wte.weight"} {
		r.Tensors = append(r.Tensors, importance.TensorReport{Name: n, Shape: []int64{4, 4}, Component: policy.Other, Matrix: true, Score: 0.5, Precision: "int8",
			Candidates: []importance.Candidate{{Precision: quant.INT8, Bytes: 20, RelError: 1e-4, Feasible: true}}})
	}
	cs, err := All(r)
	require.NoError(t, err)
	require.Len(t, cs, 3)

	cs, err = All(&importance.Report{Tensors: []importance.TensorReport{{Name: "norm", Shape: []int64{4}, Precision: "keep"}}})
	require.NoError(t, err)
	require.Empty(t, cs)
}
