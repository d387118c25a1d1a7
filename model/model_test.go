package model

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/stretchr/testify/require"
)

// storiesDir is the stories260K test model, shared between checkouts.
const storiesDir = "../../shared/testdata/stories260K"

// requireStories skips the test, saying why, when the model is absent.
func requireStories(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(storiesDir, "model.safetensors")); err != nil {
		t.Skipf("stories260K test model not available at %s: %v", storiesDir, err)
	}
	return storiesDir
}

// storiesReference returns the reference input tokens and logits
// ([positions][vocab] flattened).
func storiesReference(t testing.TB) ([]int, []float32) {
	return readReference(t, requireStories(t))
}

// readReference reads a shared model's reference.json and
// reference_logits.f32.
func readReference(t testing.TB, dir string) ([]int, []float32) {
	raw, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	require.NoError(t, err)
	var ref struct {
		Positions   int   `json:"positions"`
		VocabSize   int   `json:"vocab_size"`
		InputTokens []int `json:"input_tokens"`
	}
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.Len(t, ref.InputTokens, ref.Positions)
	b, err := os.ReadFile(filepath.Join(dir, "reference_logits.f32"))
	require.NoError(t, err)
	require.Len(t, b, 4*ref.Positions*ref.VocabSize)
	logits := make([]float32, len(b)/4)
	for i := range logits {
		logits[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return ref.InputTokens, logits
}

func loadStories(t testing.TB) *Model {
	m, err := Load(requireStories(t), cpu.New(0))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// maxAbsDiff returns the largest |a-b| and its index.
func maxAbsDiff(a, b []float32) (float64, int) {
	worst, at := 0.0, -1
	for i := range a {
		if d := math.Abs(float64(a[i]) - float64(b[i])); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	return worst, at
}

// requireReference checks logits against the reference at every position.
func requireReference(t *testing.T, what string, got, want []float32, vocab int) {
	t.Helper()
	require.Len(t, got, len(want))
	worst := 0.0
	for p := 0; p < len(want)/vocab; p++ {
		d, at := maxAbsDiff(got[p*vocab:(p+1)*vocab], want[p*vocab:(p+1)*vocab])
		require.LessOrEqualf(t, d, 1e-4, "%s: position %d logit %d: got %v, reference %v", what, p, at, got[p*vocab+at], want[p*vocab+at])
		worst = max(worst, d)
	}
	t.Logf("%s: max |logit - reference| over %d positions = %.3g", what, len(want)/vocab, worst)
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestStoriesReference is the key test: the float32 forward pass of
// stories260K reproduces an independent implementation's logits.
func TestStoriesReference(t *testing.T) {
	tokens, want := storiesReference(t)
	m := loadStories(t)
	V := m.Config.Vocab
	require.Equal(t, 512, V)
	var params int64
	ck, err := checkpoint.Open(storiesDir, checkpoint.Options{})
	require.NoError(t, err)
	for _, tn := range ck.Tensors {
		params += tn.NumElements()
	}
	ck.Close()
	require.Equal(t, params, m.Float32Elements(), "every weight held once as float32 (the head shares the embedding)")

	t.Run("all at once", func(t *testing.T) {
		s := m.NewSession(1, len(tokens))
		got, err := s.Forward([][]int{tokens}, nil)
		require.NoError(t, err)
		require.Equal(t, len(tokens), s.Len())
		requireReference(t, "one call of 256 tokens", got, want, V)
		for p := 0; p+1 < len(tokens); p++ {
			require.Equalf(t, tokens[p+1], argmax(got[p*V:(p+1)*V]), "greedy token at position %d", p)
		}
	})
	t.Run("token by token", func(t *testing.T) {
		s := m.NewSession(1, len(tokens))
		got := make([]float32, 0, len(want))
		for p, id := range tokens {
			l, err := s.Forward([][]int{{id}}, nil)
			require.NoError(t, err)
			require.Equal(t, p+1, s.Len())
			got = append(got, l...)
		}
		requireReference(t, "256 calls of 1 token (KV cache)", got, want, V)
	})
	t.Run("uneven chunks", func(t *testing.T) {
		s := m.NewSession(1, len(tokens))
		var got []float32
		for lo := 0; lo < len(tokens); {
			hi := min(len(tokens), lo+1+lo%7)
			l, err := s.Forward([][]int{tokens[lo:hi]}, nil)
			require.NoError(t, err)
			got = append(got, l...)
			lo = hi
		}
		requireReference(t, "chunks of 1..7 tokens", got, want, V)
	})
}

// minillamaDir is the shared main quality model, relative to this package.
const minillamaDir = "../../shared/testdata/minillama"

// TestMinillamaReference: the float32 forward pass of minillama (GQA, an
// untied head, rows of 256 and 768) reproduces the training PyTorch
// model's logits on held-out text, in one call and through the KV cache.
func TestMinillamaReference(t *testing.T) {
	if _, err := os.Stat(filepath.Join(minillamaDir, "model.safetensors")); err != nil {
		t.Skipf("minillama test model not available at %s: %v", minillamaDir, err)
	}
	tokens, want := readReference(t, minillamaDir)
	m, err := Load(minillamaDir, cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	V := m.Config.Vocab
	require.Equal(t, 2048, V)
	require.NotEqual(t, m.EmbeddingName(), m.HeadName(), "the head is untied")
	got, err := m.NewSession(1, len(tokens)).Forward([][]int{tokens}, nil)
	require.NoError(t, err)
	requireReference(t, "minillama, one call of 256 tokens", got, want, V)
	s := m.NewSession(1, len(tokens))
	got = got[:0]
	for lo := 0; lo < len(tokens); lo += 64 {
		l, err := s.Forward([][]int{tokens[lo : lo+64]}, nil)
		require.NoError(t, err)
		got = append(got, l...)
	}
	requireReference(t, "minillama, four calls of 64 tokens (KV cache)", got, want, V)
}

// TestStoriesBatch: identical sequences in a batch give bit-identical
// logits, equal to those of a batch of one, and different sequences in a
// batch do not interfere.
func TestStoriesBatch(t *testing.T) {
	tokens, _ := storiesReference(t)
	m := loadStories(t)
	V := m.Config.Vocab
	seq := tokens[:64]
	one := m.NewSession(1, 64)
	solo, err := one.Forward([][]int{seq}, nil)
	require.NoError(t, err)

	s := m.NewSession(2, 64)
	var got []float32
	for _, chunk := range [][2]int{{0, 40}, {40, 41}, {41, 64}} {
		a := seq[chunk[0]:chunk[1]]
		l, err := s.Forward([][]int{a, a}, nil)
		require.NoError(t, err)
		n := len(a) * V
		requireBits(t, l[:n], l[n:], "sequence 0 vs sequence 1")
		got = append(got, l[:n]...)
	}
	d, _ := maxAbsDiff(got, solo)
	require.LessOrEqual(t, d, 1e-5, "batch of 2 in chunks vs batch of 1 in one call")

	// A different second sequence leaves the first one's logits alone.
	other := make([]int, 64)
	for i := range other {
		other[i] = (7*i + 3) % V
	}
	s2 := m.NewSession(2, 64)
	l, err := s2.Forward([][]int{seq, other}, nil)
	require.NoError(t, err)
	requireBits(t, l[:64*V], solo, "sequence 0 of a mixed batch vs batch of 1")
}

// requireBits reports the first index where a and b differ in bits.
func requireBits(t *testing.T, a, b []float32, what string) {
	t.Helper()
	require.Len(t, a, len(b))
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: first difference at %d: %v vs %v", what, i, a[i], b[i])
		}
	}
}

func TestSessionErrors(t *testing.T) {
	m := loadStories(t)
	s := m.NewSession(2, 4)
	_, err := s.Forward([][]int{{1}}, nil)
	require.ErrorContains(t, err, "1 sequences for a session of 2")
	_, err = s.Forward([][]int{{1, 2}, {1}}, nil)
	require.ErrorContains(t, err, "sequence 1 has 1 tokens")
	_, err = s.Forward([][]int{{}, {}}, nil)
	require.ErrorContains(t, err, "no tokens")
	_, err = s.Forward([][]int{{1}, {512}}, nil)
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = s.Forward([][]int{{1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}}, nil)
	require.ErrorContains(t, err, "exceed")
	require.Equal(t, 0, s.Len(), "failed calls leave the session unchanged")
	_, err = s.Forward([][]int{{1, 2, 3}, {1, 2, 3}}, nil)
	require.NoError(t, err)
	_, err = s.Forward([][]int{{1, 2}, {1, 2}}, nil)
	require.ErrorContains(t, err, "2 positions after 3 exceed the session's 4")
	require.Equal(t, 3, s.Len())
	s.Reset()
	require.Equal(t, 0, s.Len())

	_, err = m.NewSession(0, 4).Forward([][]int{}, nil)
	require.ErrorContains(t, err, "must be positive")

	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	_, err = s.Forward([][]int{{1}, {1}}, nil)
	require.ErrorContains(t, err, "closed")
}

// TestObserver: every linear layer is observed once per forward, in
// LinearNames order, with its input's shape and values.
func TestObserver(t *testing.T) {
	m := loadStories(t)
	c := m.Config
	names := m.LinearNames()
	require.Len(t, names, 7*c.Layers+1)
	require.Equal(t, "model.layers.0.self_attn.q_proj.weight", names[0])
	require.Equal(t, "model.layers.0.mlp.down_proj.weight", names[6])
	require.Equal(t, "model.embed_tokens.weight", names[len(names)-1], "tied head")

	in := map[string]int{}
	for _, l := range m.Linears() {
		in[l.Name] = l.Cols
		require.Equal(t, "f32", l.Precision.String())
	}
	type call struct {
		name       string
		tokens, in int
	}
	var calls []call
	var qIn []float32
	s := m.NewSession(2, 8)
	obs := func(name string, x []float32, tokens, inFeatures int) {
		require.Len(t, x, tokens*inFeatures, name)
		calls = append(calls, call{name, tokens, inFeatures})
		if name == "model.layers.0.self_attn.q_proj.weight" {
			qIn = append([]float32(nil), x...)
		}
	}
	_, err := s.Forward([][]int{{1, 2, 3}, {4, 5, 6}}, obs)
	require.NoError(t, err)
	require.Len(t, calls, len(names))
	for i, cl := range calls {
		require.Equal(t, names[i], cl.name)
		require.Equal(t, 6, cl.tokens, cl.name)
		require.Equal(t, in[cl.name], cl.in, cl.name)
	}
	require.Equal(t, 172, calls[6].in, "down_proj input is the intermediate size")

	// The input of layer 0's q_proj is rmsnorm(embedding) of each token, row b·T+t.
	emb := m.embed.w
	for r, id := range []int{1, 2, 3, 4, 5, 6} {
		want := make([]float32, c.Hidden)
		rmsnorm(want, emb[id*c.Hidden:(id+1)*c.Hidden], m.layers[0].attnNorm, c.NormEps)
		require.Equal(t, want, qIn[r*c.Hidden:(r+1)*c.Hidden], "row %d", r)
	}

	calls = nil
	_, err = s.Forward([][]int{{7}, {8}}, obs)
	require.NoError(t, err)
	require.Len(t, calls, len(names))
	require.Equal(t, 2, calls[0].tokens)
}
