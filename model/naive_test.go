package model

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/qformat"
	"github.com/stretchr/testify/require"
)

// naiveForward is the forward pass written out as plainly as possible, in
// binary64, recomputing every position from scratch (no cache): the
// yardstick for the Mixtral, sliding-window and quantized paths. get returns a tensor as
// binary32, by name. It returns the logits of every position.
func naiveForward(c *Config, get func(string) []float32, tokens []int) [][]float64 {
	T, H, hd := len(tokens), c.Hidden, c.HeadDim
	matvec := func(w []float32, x []float64, rows int) []float64 {
		cols := len(x)
		y := make([]float64, rows)
		for n := range rows {
			for k := range cols {
				y[n] += float64(w[n*cols+k]) * x[k]
			}
		}
		return y
	}
	norm := func(x []float64, w []float32) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(len(x))+c.NormEps)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = float64(w[i]) * x[i] * r
		}
		return y
	}
	silu := func(v float64) float64 { return v / (1 + math.Exp(-v)) }
	inv := c.InvFreq()
	rope := func(v []float64, pos int) {
		for h := 0; h < len(v)/hd; h++ {
			x := v[h*hd : (h+1)*hd]
			for i := range hd / 2 {
				a := float64(pos) * float64(inv[i])
				x1, x2 := x[i], x[i+hd/2]
				x[i] = x1*math.Cos(a) - x2*math.Sin(a)
				x[i+hd/2] = x2*math.Cos(a) + x1*math.Sin(a)
			}
		}
	}
	mlp := func(w1, w3, w2 []float32, x []float64) []float64 {
		g := matvec(w1, x, c.Intermediate)
		u := matvec(w3, x, c.Intermediate)
		for i := range g {
			g[i] = silu(g[i]) * u[i]
		}
		return matvec(w2, g, H)
	}

	embed := get("model.embed_tokens.weight")
	xs := make([][]float64, T)
	for t, id := range tokens {
		xs[t] = make([]float64, H)
		for i := range H {
			xs[t][i] = float64(embed[id*H+i])
		}
	}
	for l := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		qs, ks, vs := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range T {
			n := norm(xs[t], get(p+"input_layernorm.weight"))
			qs[t] = matvec(get(p+"self_attn.q_proj.weight"), n, c.Heads*hd)
			ks[t] = matvec(get(p+"self_attn.k_proj.weight"), n, c.KVHeads*hd)
			vs[t] = matvec(get(p+"self_attn.v_proj.weight"), n, c.KVHeads*hd)
			rope(qs[t], t)
			rope(ks[t], t)
		}
		for t := range T {
			att := make([]float64, c.Heads*hd)
			for h := range c.Heads {
				kvh := h / (c.Heads / c.KVHeads)
				w := make([]float64, t+1)
				var sum float64
				lo := 0
				if c.SlidingWindow > 0 {
					lo = max(0, t-c.SlidingWindow+1)
				}
				for j := lo; j <= t; j++ {
					var s float64
					for i := range hd {
						s += qs[t][h*hd+i] * ks[j][kvh*hd+i]
					}
					w[j] = math.Exp(s / math.Sqrt(float64(hd)))
					sum += w[j]
				}
				for j := lo; j <= t; j++ {
					for i := range hd {
						att[h*hd+i] += w[j] / sum * vs[j][kvh*hd+i]
					}
				}
			}
			o := matvec(get(p+"self_attn.o_proj.weight"), att, H)
			for i := range H {
				xs[t][i] += o[i]
			}
			n := norm(xs[t], get(p+"post_attention_layernorm.weight"))
			var out []float64
			if c.Experts == 0 {
				out = mlp(get(p+"mlp.gate_proj.weight"), get(p+"mlp.up_proj.weight"), get(p+"mlp.down_proj.weight"), n)
			} else {
				logits := matvec(get(p+"block_sparse_moe.gate.weight"), n, c.Experts)
				prob := make([]float64, len(logits))
				var z float64
				for e, v := range logits {
					prob[e] = math.Exp(v)
					z += prob[e]
				}
				order := make([]int, len(prob))
				for e := range order {
					order[e] = e
				}
				sort.SliceStable(order, func(a, b int) bool { return prob[order[a]] > prob[order[b]] })
				top := order[:c.ExpertsPerToken]
				var kept float64
				for _, e := range top {
					kept += prob[e] / z
				}
				out = make([]float64, H)
				for _, e := range top {
					x := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, e)
					y := mlp(get(x+"w1.weight"), get(x+"w3.weight"), get(x+"w2.weight"), n)
					for i := range H {
						out[i] += prob[e] / z / kept * y[i]
					}
				}
			}
			for i := range H {
				xs[t][i] += out[i]
			}
		}
	}
	head := "lm_head.weight"
	if c.Tied || get(head) == nil {
		head = "model.embed_tokens.weight"
	}
	logits := make([][]float64, T)
	for t := range T {
		logits[t] = matvec(get(head), norm(xs[t], get("model.norm.weight")), c.Vocab)
	}
	return logits
}

// floatGetter reads the tensors of an original checkpoint, nil when absent.
func floatGetter(t *testing.T, path string) func(string) []float32 {
	ck, err := checkpoint.Open(path, checkpoint.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { ck.Close() })
	cache := map[string][]float32{}
	return func(name string) []float32 {
		if w, ok := cache[name]; ok {
			return w
		}
		tn, ok := ck.Lookup(name)
		if !ok {
			return nil
		}
		w := make([]float32, tn.NumElements())
		require.NoError(t, tn.Float32(w))
		cache[name] = w
		return w
	}
}

// dequantGetter reads the tensors of a quantized checkpoint, dequantized
// by the reference backend, nil when absent.
func dequantGetter(t *testing.T, path string) func(string) []float32 {
	qm, err := qformat.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { qm.Close() })
	be := cpu.New(0)
	cache := map[string][]float32{}
	return func(name string) []float32 {
		if w, ok := cache[name]; ok {
			return w
		}
		e, ok := qm.Lookup(name)
		if !ok {
			return nil
		}
		w := make([]float32, e.NumElements())
		require.NoError(t, qm.Float32(e, w, be))
		cache[name] = w
		return w
	}
}

// requireCloseToNaive checks logits ([T][vocab] flattened) against the
// naive pass, within tol·max(1, max|naive|) per position.
func requireCloseToNaive(t *testing.T, got []float32, want [][]float64, tol float64) {
	t.Helper()
	V := len(want[0])
	require.Len(t, got, len(want)*V)
	worst := 0.0
	for p, row := range want {
		scale := 1.0
		for _, v := range row {
			scale = max(scale, math.Abs(v))
		}
		for i, v := range row {
			d := math.Abs(float64(got[p*V+i]) - v)
			worst = max(worst, d/scale)
			if d > tol*scale {
				t.Fatalf("position %d logit %d: got %v, naive %v (|diff| %g > %g)", p, i, got[p*V+i], v, d, tol*scale)
			}
		}
	}
	t.Logf("max |diff| / max(1, max|logit|) against the naive pass: %.3g", worst)
}
