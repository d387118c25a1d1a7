package importance_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

func storiesSeqs(t *testing.T) [][]int {
	raw, err := os.ReadFile(filepath.Join(requireStories(t), "reference.json"))
	require.NoError(t, err)
	var ref struct {
		InputTokens []int `json:"input_tokens"`
	}
	require.NoError(t, json.Unmarshal(raw, &ref))
	half := len(ref.InputTokens) / 2
	return [][]int{ref.InputTokens[:half], ref.InputTokens[half:]}
}

// meanKL is the mean over positions of KL(p ‖ q) from two logit arrays,
// computed independently of the package, in binary64.
func meanKL(p, q []float32, vocab int) float64 {
	lsm := func(row []float32) []float64 {
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - mx)
		}
		out := make([]float64, len(row))
		for i, v := range row {
			out[i] = float64(v) - mx - math.Log(s)
		}
		return out
	}
	var total float64
	n := len(p) / vocab
	for r := range n {
		lp, lq := lsm(p[r*vocab:(r+1)*vocab]), lsm(q[r*vocab:(r+1)*vocab])
		for j := range lp {
			total += math.Exp(lp[j]) * (lp[j] - lq[j])
		}
	}
	return total / float64(n)
}

// forward runs each sequence alone through a fresh session.
func forward(t *testing.T, m *model.Model, seqs [][]int) [][]float32 {
	var out [][]float32
	for _, s := range seqs {
		l, err := m.NewSession(1, len(s)).Forward([][]int{s}, nil)
		require.NoError(t, err)
		out = append(out, l)
	}
	return out
}

// The measured sensitivity of a matrix is the KL divergence of a full
// forward pass with that matrix alone rounded to INT4 (checked here for
// the embedding, an early and a late matrix against an independent
// computation), the model is left as it was, and Analyze turns it into
// predicted KL losses.
func TestMeasureSensitivityOnStories260K(t *testing.T) {
	dir := requireStories(t)
	seqs := storiesSeqs(t)
	m, err := model.Load(dir, cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	before := forward(t, m, seqs)
	calls := 0
	sens, err := importance.MeasureSensitivity(context.Background(), m, seqs, importance.SensitivityOptions{
		GroupSize: 32, Progress: func(done, total int) { calls++ },
	})
	require.NoError(t, err)
	after := forward(t, m, seqs)
	require.Equal(t, before, after, "the model's weights are restored")
	vocab := m.Config.Vocab
	for name, kl := range sens.KL {
		assert.Positive(t, kl, name)
	}
	assert.Equal(t, len(sens.KL), calls)

	be := cpu.New(0)
	last := m.Stages(m.Layers() - 1)
	for _, name := range []string{m.EmbeddingName(), m.Stages(0)[0][0], last[len(last)-1][0]} {
		w, rows, cols, ok := m.Weights(name)
		require.True(t, ok, name)
		l := quant.Layout{Rows: rows, Cols: cols, GroupSize: 32, Precision: quant.INT4}
		sc := make([]uint16, l.NumScales())
		packed := make([]byte, l.PackedBytes())
		q := make([]float32, len(w))
		require.NoError(t, be.GroupScales(sc, w, l))
		require.NoError(t, be.Quantize(packed, w, sc, l))
		require.NoError(t, be.Dequantize(q, packed, sc, l))
		orig, err := m.SwapWeights(name, q)
		require.NoError(t, err)
		got := forward(t, m, seqs)
		_, err = m.SwapWeights(name, orig)
		require.NoError(t, err)
		var sum float64
		var n int
		for i := range got {
			k := len(got[i]) / vocab
			sum += meanKL(before[i], got[i], vocab) * float64(k)
			n += k
		}
		assert.InEpsilon(t, sum/float64(n), sens.KL[name], 1e-4, name)
	}

	ck := openStories(t)
	a, err := importance.Analyze(ck, importance.Options{GroupSize: 32, Sensitivity: sens})
	require.NoError(t, err)
	require.NotNil(t, a.Sensitivity)
	for _, tt := range a.Matrices() {
		ref, ok := tt.CandidateAt(quant.INT4, 32)
		require.True(t, ok)
		assert.InEpsilon(t, tt.MeasuredKL, ref.Loss, 1e-12, "%s: the reference's loss is its measured KL", tt.Name)
		c8, _ := tt.CandidateAt(quant.INT8, 32)
		assert.InEpsilon(t, tt.Sensitivity*c8.RelError, c8.Loss, 1e-12, tt.Name)
		assert.Less(t, c8.Loss, ref.Loss, tt.Name)
	}

	// A sensitivity that misses a matrix is not used, and says so.
	delete(sens.KL, m.EmbeddingName())
	var notices []string
	a, err = importance.Analyze(ck, importance.Options{GroupSize: 32, Sensitivity: sens, Notice: func(s string) { notices = append(notices, s) }})
	require.NoError(t, err)
	assert.Nil(t, a.Sensitivity)
	assert.Contains(t, notices, "measured sensitivity not used: no KL for "+m.EmbeddingName()+"; losses are importance-weighted errors")
}

func TestSensitivityWork(t *testing.T) {
	m, err := model.Load(requireStories(t), cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	// stories260K: 5 layers of q, o 64×64, k, v 32×64 (4 KV heads) and
	// gate, up, down 64×172, 7 matrices each; the head is the 512×64
	// embedding (tied).
	const layer, head = 2*64*64 + 2*32*64 + 3*64*172, 512 * 64
	var want int64 = 5*layer + head // reference pass and embedding
	for li := range 5 {
		want += 7 * (int64(5-li)*layer + head)
	}
	seqs := [][]int{make([]int, 10), make([]int, 6)}
	assert.Equal(t, 16*want, importance.SensitivityWork(m, seqs))
}
