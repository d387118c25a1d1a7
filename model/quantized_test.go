package model

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/synth"
	"github.com/stretchr/testify/require"
)

// quantizeTo quantizes the checkpoint at in into a fresh directory with
// the static policy, user rules (REGEX=PRECISION) first.
func quantizeTo(t testing.TB, in string, groupSize int, rules ...string) string {
	t.Helper()
	ck, err := mixq.Open(in)
	require.NoError(t, err)
	defer ck.Close()
	var user []policy.Rule
	for _, r := range rules {
		rule, err := policy.ParseRule(r)
		require.NoError(t, err)
		user = append(user, rule)
	}
	opt := mixq.Options{Policy: mixq.StaticPolicy(ck, user), GroupSize: groupSize}
	plan, err := mixq.PlanQuantization(ck, opt)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "quantized")
	_, err = mixq.Quantize(context.Background(), ck, plan, out, opt)
	require.NoError(t, err)
	return out
}

// requirePackedAsStored checks that every quantized tensor of the
// checkpoint is held packed (never as float32) and every other one as
// float32, and that Float32Elements counts exactly the latter.
func requirePackedAsStored(t *testing.T, m *Model, path string) (packed int) {
	t.Helper()
	qm, err := qformat.Open(path)
	require.NoError(t, err)
	defer qm.Close()
	var floats int64
	for _, e := range qm.Entries {
		if !e.Precision().Quantized() {
			floats += e.NumElements()
		}
	}
	for _, l := range m.Linears() {
		e, ok := qm.Lookup(l.Name)
		require.True(t, ok, l.Name)
		if e.Precision().Quantized() {
			require.Equal(t, e.Precision(), l.Precision, l.Name)
			packed++
		} else {
			require.Equal(t, quant.F32, l.Precision, l.Name)
		}
	}
	for _, ly := range m.layers {
		for _, l := range ly.linears() {
			require.Equal(t, l.quantized(), l.packed != nil, l.name)
			if l.quantized() {
				require.Nil(t, l.w, "%s is quantized but held as float32", l.name)
			}
		}
	}
	if e, _ := qm.Lookup("model.embed_tokens.weight"); e.Precision().Quantized() {
		require.Nil(t, m.embed.w, "quantized embedding held as float32")
	}
	require.Equal(t, floats, m.Float32Elements(), "float32 elements held = elements of the tensors not stored quantized")
	return packed
}

// TestQuantizedStories runs stories260K quantized by the library, its
// matrices packed: its logits match the naive pass over the dequantized
// weights closely, and its greedy choices the float32 model's.
func TestQuantizedStories(t *testing.T) {
	tokens, ref := storiesReference(t)
	V := 512
	for _, tc := range []struct {
		name     string
		group    int
		rules    []string
		agree    float64
		nPacked  int
		quantEmb bool
	}{
		// Default policy: attention and MLP int8, embedding (the tied head) f16.
		{name: "default", group: 0, agree: 0.8, nPacked: 35},
		// Every matrix int8 in small, ragged groups, the tied embedding
		// too: embedding rows are dequantized on lookup and the head goes
		// through MatMul.
		{name: "int8-all", group: 48, rules: []string{`embed_tokens|lm_head=int8`}, agree: 0.8, nPacked: 36, quantEmb: true},
		// Every matrix int4: too coarse for a 260K model to keep its
		// choices (about 30% agree), but the path must stay exact.
		{name: "int4-all", group: 32, rules: []string{`embed_tokens|lm_head|proj=int4`}, agree: 0.2, nPacked: 36, quantEmb: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := quantizeTo(t, storiesDir, tc.group, tc.rules...)
			m, err := Load(out, cpu.New(0))
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, tc.nPacked, requirePackedAsStored(t, m, out))
			require.Equal(t, tc.quantEmb, m.embed.quantized())

			s := m.NewSession(1, len(tokens))
			got, err := s.Forward([][]int{tokens}, nil)
			require.NoError(t, err)
			agree := 0
			for p := range tokens {
				if argmax(got[p*V:(p+1)*V]) == argmax(ref[p*V:(p+1)*V]) {
					agree++
				}
			}
			frac := float64(agree) / float64(len(tokens))
			t.Logf("top-1 agreement with the float32 reference: %d/%d = %.1f%%", agree, len(tokens), 100*frac)
			require.GreaterOrEqual(t, frac, tc.agree)

			// Exactness of the quantized path: against the naive pass on the
			// dequantized weights, only summation order differs.
			n := 24
			want := naiveForward(m.Config, dequantGetter(t, out), tokens[:n])
			requireCloseToNaive(t, got[:n*V], want, 2e-5)

			// Token by token through the cache gives the same logits.
			s2 := m.NewSession(1, n)
			for p := range n {
				l, err := s2.Forward([][]int{{tokens[p]}}, nil)
				require.NoError(t, err)
				d, _ := maxAbsDiff(l, got[p*V:(p+1)*V])
				require.LessOrEqual(t, d, 1e-4, "position %d", p)
			}
		})
	}
}

// writeSynth writes a synthetic checkpoint of a preset in F32.
func writeSynth(t testing.TB, preset string, layers int) string {
	t.Helper()
	p, err := synth.Lookup(preset)
	require.NoError(t, err)
	if layers > 0 {
		p = p.WithLayers(layers)
	}
	dir := filepath.Join(t.TempDir(), preset)
	require.NoError(t, synth.Write(dir, synth.Options{Preset: p, Seed: 7, DType: safetensors.F32}))
	return dir
}

// TestMixtral checks the MoE forward pass of a synthetic tiny-moe against
// the naive pass, in one call and through the cache, in float32 and
// quantized (experts int4, the rest int8, embedding int4).
func TestMixtral(t *testing.T) {
	dir := writeSynth(t, "tiny-moe", 0)
	tokens := []int{1, 17, 200, 33, 91, 5, 250, 64}
	for _, tc := range []struct {
		name  string
		path  string
		get   func(string) []float32
		quant bool
	}{
		{name: "f32", path: dir, get: floatGetter(t, dir)},
		{name: "quantized", path: func() string {
			return quantizeTo(t, dir, 32, `embed_tokens=int4`, `lm_head=int8`)
		}(), quant: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(tc.path, nil)
			require.NoError(t, err)
			defer m.Close()
			c := m.Config
			require.Equal(t, ArchMixtral, c.Arch)
			require.Equal(t, 4, c.Experts)
			require.Equal(t, 2, c.ExpertsPerToken)
			get := tc.get
			if tc.quant {
				get = dequantGetter(t, tc.path)
				require.Equal(t, 2*(4+1+3*4)+1, requirePackedAsStored(t, m, tc.path))
				require.True(t, m.embed.quantized())
			}
			want := naiveForward(c, get, tokens)
			V := c.Vocab

			// Two sequences: the test one and a different one beside it.
			other := []int{3, 3, 3, 9, 9, 9, 100, 101}
			s := m.NewSession(2, len(tokens))
			l1, err := s.Forward([][]int{tokens[:5], other[:5]}, nil)
			require.NoError(t, err)
			var got []float32
			got = append(got, l1[:5*V]...)
			for p := 5; p < len(tokens); p++ {
				l, err := s.Forward([][]int{{tokens[p]}, {other[p]}}, nil)
				require.NoError(t, err)
				got = append(got, l[:V]...)
			}
			requireCloseToNaive(t, got, want, 2e-5)
		})
	}
}

// TestSynthBF16: a dense synthetic model stored in BF16 (tied, ragged
// intermediate size) is widened at load and matches the naive pass.
func TestSynthBF16(t *testing.T) {
	p, err := synth.Lookup("tiny")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "tiny")
	require.NoError(t, synth.Write(dir, synth.Options{Preset: p, Seed: 3, DType: safetensors.BF16}))
	m, err := Load(dir, nil)
	require.NoError(t, err)
	defer m.Close()
	require.True(t, m.Config.Tied)
	tokens := []int{1, 2, 255, 128, 7, 7, 7, 42, 99, 0}
	got, err := m.NewSession(1, len(tokens)).Forward([][]int{tokens}, nil)
	require.NoError(t, err)
	requireCloseToNaive(t, got, naiveForward(m.Config, floatGetter(t, dir), tokens), 2e-5)
}

// TestMixtralObserver: the router and every expert that receives tokens
// are observed, in LinearNames order, with the routed rows.
func TestMixtralObserver(t *testing.T) {
	m, err := Load(writeSynth(t, "tiny-moe", 1), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	names := m.LinearNames()
	require.Equal(t, []string{
		"model.layers.0.self_attn.q_proj.weight",
		"model.layers.0.self_attn.k_proj.weight",
		"model.layers.0.self_attn.v_proj.weight",
		"model.layers.0.self_attn.o_proj.weight",
		"model.layers.0.block_sparse_moe.gate.weight",
		"model.layers.0.block_sparse_moe.experts.0.w1.weight",
		"model.layers.0.block_sparse_moe.experts.0.w3.weight",
		"model.layers.0.block_sparse_moe.experts.0.w2.weight",
	}, names[:8])
	require.Equal(t, "lm_head.weight", names[len(names)-1])
	pos := map[string]int{}
	for i, n := range names {
		pos[n] = i
	}
	routed := 0
	last := -1
	s := m.NewSession(3, 4)
	_, err = s.Forward([][]int{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}}, func(name string, x []float32, tokens, in int) {
		i, ok := pos[name]
		require.True(t, ok, name)
		require.Greater(t, i, last, "%s out of order", name)
		last = i
		require.Len(t, x, tokens*in)
		switch {
		case strings.HasSuffix(name, "w2.weight"):
			require.Equal(t, 128, in)
			routed += tokens
		case strings.Contains(name, ".experts."):
			require.Equal(t, 64, in)
		default:
			require.Equal(t, 12, tokens, name)
		}
	})
	require.NoError(t, err)
	require.Equal(t, 12*2, routed, "each of 12 tokens goes to 2 experts")
}
