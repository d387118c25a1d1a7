package gptq

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// minillamaDir is the real test model, shared between checkouts.
const minillamaDir = "../../shared/testdata/minillama"

// requireMinillama skips, saying why, when the model is absent.
func requireMinillama(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(minillamaDir, "model.safetensors")); err != nil {
		t.Skipf("minillama test model not available at %s: %v", minillamaDir, err)
	}
	return minillamaDir
}

// calibSeqs returns the first n calibration sequences, cut to length T.
func calibSeqs(t *testing.T, dir string, n, T int) [][]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calib_tokens.json"))
	require.NoError(t, err)
	var v struct{ Sequences [][]int }
	require.NoError(t, json.Unmarshal(b, &v))
	require.GreaterOrEqual(t, len(v.Sequences), n)
	out := make([][]int, n)
	for i := range out {
		out[i] = v.Sequences[i][:T]
	}
	return out
}

func loadMinillama(t *testing.T) *model.Model {
	t.Helper()
	m, err := model.Load(requireMinillama(t), cpu.New(0))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// targets quantizes the named linears (all, when names is empty) to INT4 g.
func targets(m *model.Model, g int, names ...string) func(string) (quant.Layout, bool) {
	return func(name string) (quant.Layout, bool) {
		if len(names) > 0 {
			found := false
			for _, n := range names {
				found = found || n == name
			}
			if !found {
				return quant.Layout{}, false
			}
		}
		w, rows, cols, ok := m.Weights(name)
		if !ok || w == nil {
			return quant.Layout{}, false
		}
		return quant.Layout{Rows: rows, Cols: cols, GroupSize: g, Precision: quant.INT4}, true
	}
}

// On a real layer (minillama layer 0, whose inputs no quantization
// precedes), with H measured here independently through the model's
// Observer, GPTQ's proxy loss is below round-to-nearest's for every matrix.
func TestGPTQOnRealLayerBeatsRTN(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the real model's calibration several times (about 10 s)")
	}
	seqs := calibSeqs(t, requireMinillama(t), 4, 96)
	ref := loadMinillama(t)
	names := ref.Stages(0)
	all := append(append(append([]string{}, names[0]...), names[1]...), append(names[2], names[3]...)...)
	// H of each weight's input, straight from the F32 forward pass.
	hs := map[string]*Moment{}
	weights := map[string][]float32{}
	for _, n := range all {
		w, _, _, ok := ref.Weights(n)
		require.True(t, ok, n)
		weights[n] = append([]float32(nil), w...)
	}
	for _, seq := range seqs {
		s := ref.NewSession(1, len(seq))
		_, err := s.Forward([][]int{seq}, func(w string, x []float32, tokens, in int) {
			if !strings.HasPrefix(w, "model.layers.0.") {
				return
			}
			if hs[w] == nil {
				hs[w] = NewMoment(in)
			}
			require.NoError(t, hs[w].Add(x, tokens, 2))
		})
		require.NoError(t, err)
	}
	m := loadMinillama(t)
	res, err := Sequential(context.Background(), m, seqs, CalibOptions{Options: Options{Search: true}, Target: targets(m, 32, all...)})
	require.NoError(t, err)
	require.Len(t, res, len(all))
	for _, n := range all {
		r := res[n]
		l := r.Layout
		got := make([]float32, l.Elements())
		require.NoError(t, cpu.New(1).Dequantize(got, r.Packed, r.Scales, l))
		w := weights[n]
		// Layer 0's q, k and v see the F32 embedding, so Sequential's H is
		// this one; later stages see the outputs of quantized linears, and
		// are checked against the H Sequential used (r.Loss, r.LossRTN).
		h := hs[n].Mean()
		gl, rl := proxy(w, got, h, l.Rows, l.Cols), proxy(w, rtn(t, w, l), h, l.Rows, l.Cols)
		t.Logf("%s: proxy loss %.4g vs RTN %.4g (%.2f) on F32 inputs; %.2f on its own; rows per method %v", n, gl, rl, gl/rl, r.Loss/r.LossRTN, r.Method)
		if strings.Contains(n, "q_proj") || strings.Contains(n, "k_proj") || strings.Contains(n, "v_proj") {
			assert.LessOrEqual(t, gl, rl, n)
			assert.InDelta(t, rl, r.LossRTN, 1e-9*rl, "%s: the RTN loss Sequential reports", n)
			assert.InDelta(t, gl, r.Loss, 1e-9*gl, "%s: the loss Sequential reports", n)
		}
		assert.LessOrEqual(t, r.Loss, r.LossRTN, n)
		assert.Less(t, r.Loss, 0.8*r.LossRTN, "%s: GPTQ should clearly beat rounding on a real layer", n)
	}
}

// The bytes do not depend on the number of goroutines.
func TestSequentialDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the real model's calibration several times (about 10 s)")
	}
	seqs := calibSeqs(t, requireMinillama(t), 2, 48)
	run := func(workers, procs int) map[string]*Rounded {
		old := runtime.GOMAXPROCS(procs)
		defer runtime.GOMAXPROCS(old)
		m := loadMinillama(t)
		res, err := Sequential(context.Background(), m, seqs, CalibOptions{
			Options: Options{Search: true, Workers: workers},
			Target: func(name string) (quant.Layout, bool) {
				if !strings.HasPrefix(name, "model.layers.0.") && !strings.HasPrefix(name, "model.layers.1.") && name != "model.embed_tokens.weight" {
					return quant.Layout{}, false
				}
				return targets(m, 64)(name)
			},
		})
		require.NoError(t, err)
		return res
	}
	ref := run(1, 1)
	require.Len(t, ref, 15)
	for _, c := range [][2]int{{2, 2}, {3, 1}} {
		got := run(c[0], c[1])
		for n, r := range ref {
			require.Equal(t, r.Scales, got[n].Scales, "%s workers=%d GOMAXPROCS=%d", n, c[0], c[1])
			require.Equal(t, r.Packed, got[n].Packed, "%s workers=%d GOMAXPROCS=%d", n, c[0], c[1])
		}
	}
}

// A non-finite activation is an input error naming the linear whose input
// holds it.
func TestSequentialNonFiniteActivation(t *testing.T) {
	seqs := calibSeqs(t, requireMinillama(t), 1, 16)
	m := loadMinillama(t)
	w, _, _, ok := m.Weights("model.layers.0.self_attn.v_proj.weight")
	require.True(t, ok)
	w[5] = float32(math.Inf(1)) // v's output, o's input, becomes non-finite
	o := "model.layers.0.self_attn.o_proj.weight"
	_, err := Sequential(context.Background(), m, seqs, CalibOptions{Target: targets(m, 32, o)})
	require.Error(t, err)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), o)
	assert.Contains(t, err.Error(), "non-finite activation")
}

func TestSequentialStopsWithContext(t *testing.T) {
	seqs := calibSeqs(t, requireMinillama(t), 2, 16)
	m := loadMinillama(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Sequential(ctx, m, seqs, CalibOptions{Target: targets(m, 32)})
	require.ErrorIs(t, err, context.Canceled)
}
