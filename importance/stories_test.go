package importance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// storiesDir is the shared real model, relative to this package.
const storiesDir = "../../shared/testdata/stories260K"

// requireStories skips, saying why, when the model is absent.
func requireStories(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(storiesDir, "model.safetensors")); err != nil {
		t.Skipf("stories260K test model not available at %s: %v", storiesDir, err)
	}
	return storiesDir
}

// storiesCalib runs the built-in forward pass over the reference tokens.
func storiesCalib(t *testing.T) *importance.CalibStats {
	t.Helper()
	dir := requireStories(t)
	raw, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	require.NoError(t, err)
	var ref struct {
		InputTokens []int `json:"input_tokens"`
	}
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.NotEmpty(t, ref.InputTokens)
	m, err := model.Load(dir, cpu.New(0))
	require.NoError(t, err)
	defer m.Close()
	// Two sequences: the first and the second half of the reference.
	half := len(ref.InputTokens) / 2
	cal, err := importance.FromModel(m, [][]int{ref.InputTokens[:half], ref.InputTokens[half:]}, nil)
	require.NoError(t, err)
	return cal
}

func openStories(t *testing.T) *checkpoint.Checkpoint {
	t.Helper()
	ck, err := mixq.Open(requireStories(t))
	require.NoError(t, err)
	t.Cleanup(func() { ck.Close() })
	return ck
}

func analyzeStories(t *testing.T, ck *checkpoint.Checkpoint, cal *importance.CalibStats) *importance.Analysis {
	t.Helper()
	a, err := importance.Analyze(ck, importance.Options{Calib: cal, Backend: cpu.New(0)})
	require.NoError(t, err)
	return a
}

func TestStoriesCalibration(t *testing.T) {
	cal := storiesCalib(t)
	// 35 linears, the tied head observed under the embedding's name.
	assert.Len(t, cal.Layers, 36)
	head := cal.Layers["model.embed_tokens"]
	require.NotNil(t, head)
	assert.Equal(t, int64(256), head.Count)
	assert.Equal(t, 64, head.Channels())
	assert.Equal(t, 172, cal.Layers["model.layers.0.mlp.down_proj"].Channels())

	// The statistics file reproduces the analysis exactly.
	p := filepath.Join(t.TempDir(), "stats.safetensors")
	require.NoError(t, cal.Write(p))
	back, err := importance.ReadStats(p)
	require.NoError(t, err)
	ck := openStories(t)
	a1, err := analyzeStories(t, ck, cal).Report(mustDynamic(t, analyzeStories(t, ck, cal))).JSON()
	require.NoError(t, err)
	a2, err := analyzeStories(t, ck, back).Report(mustDynamic(t, analyzeStories(t, ck, back))).JSON()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(a1, a2), "report from the statistics file differs")
}

func mustDynamic(t *testing.T, a *importance.Analysis) *importance.Dynamic {
	t.Helper()
	d, err := importance.NewDynamic(a, nil, importance.DefaultHigh, importance.DefaultLow)
	require.NoError(t, err)
	return d
}

func TestStoriesDynamicEndToEnd(t *testing.T) {
	ck := openStories(t)
	a := analyzeStories(t, ck, storiesCalib(t))
	assert.Len(t, a.Matrices(), 36)
	assert.Equal(t, "model.embed_tokens.weight", a.TiedHead)
	assert.Equal(t, []importance.Signal{importance.WeightSignal, importance.ActivationSignal}, a.Used)
	e, _ := a.Lookup("model.embed_tokens.weight")
	assert.Equal(t, "model.embed_tokens", e.Layer, "the tied head's input gives the embedding its activations")
	assert.True(t, a.Calibrated)

	d := mustDynamic(t, a)
	// 36 matrices: round(7.2) = 7 F16, round(14.4) = 14 INT4, 15 INT8.
	assert.Equal(t, [4]int{36, 7, 15, 14}, [4]int{d.N, d.NHigh, d.NMid, d.NLow})

	plan, err := mixq.PlanQuantization(ck, mixq.Options{Policy: d})
	require.NoError(t, err)
	counts := map[string]int{}
	for _, it := range plan.Items {
		counts[it.Record.Precision]++
	}
	assert.Equal(t, map[string]int{"f16": 7, "int8": 15, "int4": 14, "keep": 11}, counts)

	out := filepath.Join(t.TempDir(), "q")
	res, err := mixq.Quantize(context.Background(), ck, plan, out, mixq.Options{Policy: d})
	require.NoError(t, err)
	assert.Equal(t, plan.Layout.TotalBytes(), res.WrittenBytes)
	q, err := mixq.OpenQuantized(out)
	require.NoError(t, err)
	defer q.Close()
	got := map[string]int{}
	for _, e := range q.Entries {
		got[e.Record.Precision]++
	}
	assert.Equal(t, counts, got)
	t.Logf("dynamic: %d F16, %d INT8, %d INT4 of %d matrices; %d bytes", d.NHigh, d.NMid, d.NLow, d.N, res.WrittenBytes)
}

func TestStoriesBudgetRatio6(t *testing.T) {
	ck := openStories(t)
	a := analyzeStories(t, ck, storiesCalib(t))
	target, err := importance.RatioTarget(ck, 6)
	require.NoError(t, err)
	b, err := importance.NewBudget(a, nil, ck, target, 0)
	require.NoError(t, err)
	plan, err := mixq.PlanQuantization(ck, mixq.Options{Policy: b})
	require.NoError(t, err)
	// The budget is of the model's own files: the companions carried along
	// (stories260K's README and reference files) count on disk, not in the
	// ratio (see qformat.Estimate.CarriedBytes).
	written := plan.Layout.TotalBytes()
	size := written - plan.Estimate(6).CarriedBytes
	assert.Equal(t, b.PlannedBytes, size)
	assert.LessOrEqual(t, size, target)
	assert.GreaterOrEqual(t, float64(size), 0.995*float64(target))
	assert.LessOrEqual(t, b.LowerBound, b.Loss)
	counts := map[string]int{}
	for _, it := range plan.Items {
		counts[it.Record.Precision]++
	}
	t.Logf("budget at ratio 6: target %d bytes, planned %d (%.3f%% below), ratio %.4f, precisions %v, loss %.6g, LP bound %.6g, greedy bound %.3g",
		target, size, 100*float64(target-size)/float64(target), plan.Estimate(6).CompressionRatio, counts, b.Loss, b.LowerBound, b.GreedyBound)

	// The size on disk is the planned size.
	out := filepath.Join(t.TempDir(), "q")
	res, err := mixq.Quantize(context.Background(), ck, plan, out, mixq.Options{Policy: b})
	require.NoError(t, err)
	assert.Equal(t, written, res.WrittenBytes)

	// Below everything-INT4 is a clear input error.
	_, err = importance.NewBudget(a, nil, ck, 10_000, 0)
	assert.ErrorIs(t, err, quant.ErrInput)
}

func TestStoriesDeterministicReport(t *testing.T) {
	ck := openStories(t)
	run := func() ([]byte, []byte) {
		a := analyzeStories(t, ck, storiesCalib(t))
		target, err := importance.RatioTarget(ck, 6)
		require.NoError(t, err)
		b, err := importance.NewBudget(a, nil, ck, target, 0)
		require.NoError(t, err)
		rb, err := a.Report(b).JSON()
		require.NoError(t, err)
		rd, err := a.Report(mustDynamic(t, a)).JSON()
		require.NoError(t, err)
		return rb, rd
	}
	b1, d1 := run()
	b2, d2 := run()
	assert.True(t, bytes.Equal(b1, b2), "budget report differs between runs")
	assert.True(t, bytes.Equal(d1, d2), "dynamic report differs between runs")

	var r importance.Report
	require.NoError(t, json.Unmarshal(b1, &r))
	assert.Equal(t, "budget", r.Policy)
	require.NotNil(t, r.Budget)
	assert.Len(t, r.Tensors, 47)
	for _, tr := range r.Tensors {
		if !tr.Matrix {
			assert.Equal(t, "keep", tr.Precision, tr.Name)
			continue
		}
		assert.Len(t, tr.Candidates, 3, tr.Name)
		assert.NotZero(t, tr.Rank, tr.Name)
	}
}
