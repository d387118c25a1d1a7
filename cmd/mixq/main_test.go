package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cuda/probe"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/safetensors"
)

// runCLI runs the command line in-process and returns exit code, stdout, stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestPipelineOnSynthetic(t *testing.T) {
	dir := t.TempDir()
	in, q, deq := filepath.Join(dir, "in"), filepath.Join(dir, "q"), filepath.Join(dir, "deq")

	code, _, stderr := runCLI(t, "synth", "--preset", "tiny-moe", "--seed", "7", "-o", in)
	require.Equal(t, 0, code, stderr)
	code, _, _ = runCLI(t, "synth", "--preset", "tiny-moe", "-o", in)
	assert.Equal(t, 2, code, "existing synth output needs --force")

	code, stdout, stderr := runCLI(t, "estimate", in, "--json")
	require.Equal(t, 0, code, stderr)
	var est qformat.Estimate
	require.NoError(t, json.Unmarshal([]byte(stdout), &est))
	assert.Equal(t, 6.0, est.TargetCompression)
	assert.NotEmpty(t, est.ByPrecision)
	assert.NotEmpty(t, est.ByComponent)

	code, stdout, stderr = runCLI(t, "quantize", in, "-o", q, "--json", "--explain")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "builtin:moe-experts", "--explain names the rule")
	var res struct {
		WrittenBytes int64 `json:"written_bytes"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.Equal(t, est.MixedPrecisionBytes, res.WrittenBytes)

	code, _, stderr = runCLI(t, "quantize", in, "-o", q)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--force")

	code, stdout, stderr = runCLI(t, "inspect", q, "--json")
	require.Equal(t, 0, code, stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	assert.True(t, rep.Quantized)
	precs := map[string]int{}
	for _, tt := range rep.Tensors {
		precs[tt.Precision]++
	}
	// tiny-moe: 2 layers × 4 experts × 3 matrices in INT4.
	assert.Equal(t, 24, precs["int4"])

	code, stdout, stderr = runCLI(t, "inspect", in)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "original checkpoint")

	code, _, stderr = runCLI(t, "dequantize", q, "-o", deq, "--dtype", "bf16")
	require.Equal(t, 0, code, stderr)
	code, stdout, stderr = runCLI(t, "inspect", deq, "--json")
	require.Equal(t, 0, code, stderr)
	var back inspectReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &back))
	assert.False(t, back.Quantized)
	assert.Equal(t, rep.Parameters, back.Parameters)
}

func TestBadInputExitsTwo(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "quantize", filepath.Join(dir, "missing"), "-o", filepath.Join(dir, "o"))
	assert.Equal(t, 2, code, stderr)

	code, _, _ = runCLI(t, "quantize", "--no-such-flag")
	assert.Equal(t, 2, code)
	code, _, _ = runCLI(t, "frobnicate")
	assert.Equal(t, 2, code)

	// A NaN weight: the message names the file, the tensor and the index,
	// and nothing is left behind.
	bad := filepath.Join(dir, "nan.safetensors")
	w := make([]float32, 4*8)
	for i := range w {
		w[i] = float32(i) / 10
	}
	w[13] = float32(math.NaN())
	writeF32(t, bad, "model.layers.0.mlp.up_proj.weight", []int64{4, 8}, w)
	out := filepath.Join(dir, "nanq")
	code, _, stderr = runCLI(t, "quantize", bad, "-o", out)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "model.layers.0.mlp.up_proj.weight")
	assert.Contains(t, stderr, "index 13")
	assert.Contains(t, stderr, "nan.safetensors")
	assert.NoDirExists(t, out)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		assert.NotContains(t, e.Name(), ".tmp-", "temporary output left behind")
	}

	// An impossible group size.
	good := filepath.Join(dir, "good.safetensors")
	w[13] = 1
	writeF32(t, good, "w", []int64{4, 8}, w)
	code, _, stderr = runCLI(t, "quantize", good, "-o", out, "--group-size", "0")
	assert.Equal(t, 2, code, stderr)

	// An unsupported dtype names the tensor.
	i64 := filepath.Join(dir, "i64.safetensors")
	sw, err := safetensors.Create(i64, []safetensors.Spec{{Name: "position_ids", DType: safetensors.I64, Shape: []int64{2}}}, nil)
	require.NoError(t, err)
	require.NoError(t, sw.Write("position_ids", make([]byte, 16)))
	require.NoError(t, sw.Close())
	code, _, stderr = runCLI(t, "estimate", i64)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "position_ids")
	assert.Contains(t, stderr, "I64")

	// Truncated file.
	raw, err := os.ReadFile(good)
	require.NoError(t, err)
	trunc := filepath.Join(dir, "trunc.safetensors")
	require.NoError(t, os.WriteFile(trunc, raw[:len(raw)-5], 0o644))
	code, _, stderr = runCLI(t, "inspect", trunc)
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "trunc.safetensors")
}

func writeF32(t *testing.T, path, name string, shape []int64, w []float32) {
	t.Helper()
	sw, err := safetensors.Create(path, []safetensors.Spec{{Name: name, DType: safetensors.F32, Shape: shape}}, nil)
	require.NoError(t, err)
	b := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	require.NoError(t, sw.Write(name, b))
	require.NoError(t, sw.Close())
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"5GB": 5e9, "500MB": 5e8, "2GiB": 2 << 30, "1024": 1024, "1.5kB": 1500} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "-1", "GB", "x"} {
		_, err := parseSize(bad)
		assert.Error(t, err, bad)
	}
}

// The acceptance check: `mixq estimate --json` on the real model
// equals the bytes `mixq quantize` writes.
func TestEstimateMatchesQuantizeOnStories260K(t *testing.T) {
	in := stories(t)
	code, stdout, stderr := runCLI(t, "estimate", in, "--json")
	require.Equal(t, 0, code, stderr)
	var est qformat.Estimate
	require.NoError(t, json.Unmarshal([]byte(stdout), &est))
	// Tied embeddings (no lm_head), grouped-query k/v of 4 heads × 8 = 32 rows.
	assert.Equal(t, int64(512*64+5*(2*64*64+2*32*64+3*64*172+2*64)+64), est.TotalParameters)

	out := filepath.Join(t.TempDir(), "q")
	code, _, stderr = runCLI(t, "quantize", in, "-o", out)
	require.Equal(t, 0, code, stderr)
	var onDisk int64
	ents, err := os.ReadDir(out)
	require.NoError(t, err)
	for _, e := range ents {
		fi, err := e.Info()
		require.NoError(t, err)
		onDisk += fi.Size()
	}
	assert.Equal(t, est.MixedPrecisionBytes, onDisk)
}

func stories(t *testing.T) string {
	t.Helper()
	in := filepath.Join("..", "..", "..", "shared", "testdata", "stories260K")
	if _, err := os.Stat(filepath.Join(in, "model.safetensors")); err != nil {
		t.Skipf("stories260K not available at %s: %v", in, err)
	}
	return in
}

// mixq eval reproduces the independent reference logits through
// --logits-out, and compares a quantized model with the original.
func TestEvalAndCalibrateOnStories260K(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	q, logits := filepath.Join(dir, "q"), filepath.Join(dir, "logits.f32")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)

	code, stdout, stderr := runCLI(t, "eval", "--model", in, "--quantized", q,
		"--tokens", filepath.Join(in, "reference.json"), "--logits-out", logits, "--json")
	require.Equal(t, 0, code, stderr)
	var res struct {
		Scored    int `json:"scored_positions"`
		Quantized *struct {
			Perplexity float64 `json:"perplexity"`
		} `json:"quantized"`
		KLMean float64 `json:"kl_mean"`
		Top1   float64 `json:"top1_agreement"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.Equal(t, 255, res.Scored)
	require.NotNil(t, res.Quantized)
	assert.Greater(t, res.KLMean, 0.0)
	assert.Greater(t, res.Top1, 0.8)

	got, err := os.ReadFile(logits)
	require.NoError(t, err)
	want, err := os.ReadFile(filepath.Join(in, "reference_logits.f32"))
	require.NoError(t, err)
	require.Equal(t, len(want), len(got))
	worst := 0.0
	for i := 0; i < len(want); i += 4 {
		a := math.Float32frombits(binary.LittleEndian.Uint32(got[i:]))
		b := math.Float32frombits(binary.LittleEndian.Uint32(want[i:]))
		worst = math.Max(worst, math.Abs(float64(a-b)))
	}
	t.Logf("max |logit − reference| = %.3g", worst)
	assert.LessOrEqual(t, worst, 1e-4)

	// Sampling is deterministic for a seed.
	_, s1, _ := runCLI(t, "eval", "--model", in, "--sample", "2", "--seq-len", "16", "--seed", "3", "--json")
	_, s2, _ := runCLI(t, "eval", "--model", in, "--sample", "2", "--seq-len", "16", "--seed", "3", "--json")
	assert.Equal(t, stripRate(t, s1), stripRate(t, s2))

	acts := filepath.Join(dir, "acts.safetensors")
	code, _, stderr = runCLI(t, "calibrate", in, "--sample", "2", "--seq-len", "32", "-o", acts)
	require.Equal(t, 0, code, stderr)
	f, err := safetensors.Open(acts)
	require.NoError(t, err)
	defer f.Close()
	ti, ok := f.Header().Lookup("model.layers.4.mlp.down_proj")
	require.True(t, ok)
	assert.Equal(t, []int64{64, 172}, ti.Shape, "2 sequences × 32 tokens of the 172-wide down_proj input")

	code, _, _ = runCLI(t, "eval", "--model", in)
	assert.Equal(t, 2, code, "no sequences is a usage error")
}

// stripRate removes the timing fields, which differ between runs.
func stripRate(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &v))
	delete(v["original"].(map[string]any), "tokens_per_sec")
	return v
}

// The importance issue's acceptance checks on the real model: dynamic gives
// 20/40/40 by tensor count, budget at 6× lands within 0.5% under the target,
// and both write report.json and charts.
func TestImportancePoliciesOnStories260K(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	stats := filepath.Join(dir, "stats.safetensors")
	code, _, stderr := runCLI(t, "calibrate", in, "--tokens", filepath.Join(in, "reference.json"), "--format", "stats", "-o", stats)
	require.Equal(t, 0, code, stderr)

	dyn := filepath.Join(dir, "dyn")
	code, _, stderr = runCLI(t, "quantize", in, "-o", dyn, "--policy", "dynamic", "--calib", stats)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "gradient signal dropped", "a missing signal is announced")
	var rep struct {
		Policy  string `json:"policy"`
		Tensors []struct {
			Precision string `json:"precision"`
			Matrix    bool   `json:"matrix"`
		} `json:"tensors"`
	}
	raw, err := os.ReadFile(filepath.Join(dyn+".report", "report.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &rep))
	counts := map[string]int{}
	for _, tt := range rep.Tensors {
		if tt.Matrix {
			counts[tt.Precision]++
		}
	}
	// 36 matrices: round(0.2·36) = 7 F16, round(0.4·36) = 14 INT4, 15 INT8.
	assert.Equal(t, map[string]int{"f16": 7, "int8": 15, "int4": 14}, counts)
	for _, png := range []string{"importance.png", "precision-map.png", "error-vs-bytes.png"} {
		assert.FileExists(t, filepath.Join(dyn+".report", png))
	}

	bud := filepath.Join(dir, "bud")
	code, stdout, stderr := runCLI(t, "quantize", in, "-o", bud, "--policy", "budget", "--target-ratio", "6", "--calib", stats, "--json")
	require.Equal(t, 0, code, stderr)
	// The size target is about the model: the files carried along
	// (reference_logits.f32 here) are outside it.
	model := modelBytes(t, stdout)
	onDisk, err := mixq.DirBytes(bud)
	require.NoError(t, err)
	assert.Less(t, model, onDisk, "the carried files are not counted")
	target := float64(4*260032) / 6
	assert.LessOrEqual(t, float64(model), target)
	assert.GreaterOrEqual(t, float64(model), 0.995*target)
	assert.FileExists(t, filepath.Join(bud+".report", "report.json"))

	// The same inputs give the same report.
	bud2 := filepath.Join(dir, "bud2")
	code, _, stderr = runCLI(t, "quantize", in, "-o", bud2, "--policy", "budget", "--target-ratio", "6", "--calib", stats)
	require.Equal(t, 0, code, stderr)
	a, _ := os.ReadFile(filepath.Join(bud+".report", "report.json"))
	b, _ := os.ReadFile(filepath.Join(bud2+".report", "report.json"))
	assert.Equal(t, a, b)

	// An impossible budget is a clear input error, and nothing is written.
	code, _, stderr = runCLI(t, "quantize", in, "-o", filepath.Join(dir, "never"), "--policy", "budget", "--target-ratio", "50")
	assert.Equal(t, 2, code, stderr)
	assert.NoDirExists(t, filepath.Join(dir, "never"))
	code, _, _ = runCLI(t, "quantize", in, "-o", filepath.Join(dir, "never"), "--policy", "budget")
	assert.Equal(t, 2, code, "budget needs a target")

	imp := filepath.Join(dir, "importance.json")
	code, _, stderr = runCLI(t, "analyze", in, "--calib-tokens", filepath.Join(in, "reference.json"), "-o", imp)
	require.Equal(t, 0, code, stderr)
	assert.FileExists(t, imp)
	assert.FileExists(t, filepath.Join(dir, "importance.png"))
}

// Every command's outputs follow one rule: an existing path is replaced
// only with --force.
func TestNoOutputIsOverwrittenWithoutForce(t *testing.T) {
	in := stories(t)
	dir := t.TempDir()
	precious := filepath.Join(dir, "precious")
	require.NoError(t, os.WriteFile(precious, []byte("precious"), 0o644))
	toks := filepath.Join(in, "reference.json")
	for _, args := range [][]string{
		{"calibrate", in, "--tokens", toks, "-o", precious},
		{"eval", "--model", in, "--tokens", toks, "--logits-out", precious},
		{"analyze", in, "-o", precious},
		{"quantize", in, "-o", precious, "--policy", "dynamic"},
		{"dequantize", in, "-o", precious},
		{"synth", "--preset", "tiny", "-o", precious},
	} {
		code, _, stderr := runCLI(t, args...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "--force", args)
		b, err := os.ReadFile(precious)
		require.NoError(t, err)
		require.Equal(t, "precious", string(b), "%v overwrote its output", args)
	}
	code, _, stderr := runCLI(t, "analyze", in, "-o", filepath.Join(dir, "imp.png"))
	assert.Equal(t, 2, code, stderr)

	// An existing report directory is protected too, and is checked before
	// any output is written.
	q := filepath.Join(dir, "q")
	require.NoError(t, os.MkdirAll(q+".report", 0o755))
	code, _, stderr = runCLI(t, "quantize", in, "-o", q, "--policy", "dynamic")
	assert.Equal(t, 2, code, stderr)
	assert.NoDirExists(t, q)
	// A directory mixq did not write is not replaced even with --force.
	code, _, stderr = runCLI(t, "quantize", in, "-o", q, "--policy", "dynamic", "--force")
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "did not write it")
	assert.NoDirExists(t, q)
	require.NoError(t, os.Remove(q+".report"))
	for range 2 { // the second run replaces the first run's output and report
		code, _, stderr = runCLI(t, "quantize", in, "-o", q, "--policy", "dynamic", "--force")
		require.Equal(t, 0, code, stderr)
		assert.FileExists(t, filepath.Join(q+".report", "report.json"))
	}

	// --force on synth replaces the old checkpoint only once the new one is
	// complete, through the same path as quantize.
	s := filepath.Join(dir, "s")
	code, _, stderr = runCLI(t, "synth", "--preset", "tiny", "-o", s)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "synth", "--preset", "tiny-moe", "-o", s, "--force")
	require.Equal(t, 0, code, stderr)
	fi, err := os.Stat(s)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
}

// Checkpoints whose names have no "layers.N." (GPT-2 style) quantize under
// the importance policies too.
func TestDynamicWithoutLayerNames(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "gpt2.safetensors")
	w := make([]float32, 16*32)
	for i := range w {
		w[i] = float32(i%13) - 6
	}
	writeF32(t, in, "transformer.h.0.attn.c_attn.weight", []int64{16, 32}, w)
	code, _, stderr := runCLI(t, "quantize", in, "-o", filepath.Join(dir, "q"), "--policy", "dynamic")
	require.Equal(t, 0, code, stderr)
	assert.FileExists(t, filepath.Join(dir, "q.report", "precision-map.png"))
}

// The GPU code path writes the CPU's bytes: stories260K quantized through
// the CUDA kernels and driver (run by the emulator, cuda-sim) and through
// the CPU gives files with the same sha256, under the static policy and
// under the budget policy (which also measures errors through the backend).
// scripts/gpu-check.sh runs the same comparison with --backend cuda on a GPU.
func TestCUDASimWritesCPUBytes(t *testing.T) {
	in := stories(t)
	for _, policy := range [][]string{{"--policy", "static"}, {"--policy", "budget", "--target-ratio", "5"}} {
		t.Run(policy[1], func(t *testing.T) {
			dir := t.TempDir()
			sums := map[string]map[string]string{}
			for _, be := range []string{"cpu", "cuda-sim"} {
				out := filepath.Join(dir, be)
				args := append([]string{"quantize", in, "-o", out, "--backend", be}, policy...)
				code, _, stderr := runCLI(t, args...)
				require.Equal(t, 0, code, stderr)
				sums[be] = dirSums(t, out)
			}
			require.NotEmpty(t, sums["cpu"])
			require.Equal(t, sums["cpu"], sums["cuda-sim"])
		})
	}
}

func dirSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		sums[e.Name()] = fmt.Sprintf("%x", sha256.Sum256(b))
	}
	return sums
}

// Without a usable GPU: --backend cuda exits 2 naming the reason, auto runs
// on the CPU after a one-line notice, and mixq devices says why.
func TestBackendFallbackWithoutGPU(t *testing.T) {
	if _, ok := probe.Run().Usable(); ok {
		t.Skip("this machine has a usable GPU")
	}
	in := stories(t)
	code, _, stderr := runCLI(t, "quantize", in, "-o", filepath.Join(t.TempDir(), "q"), "--backend", "cuda")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "--backend cuda:")
	code, _, stderr = runCLI(t, "quantize", in, "-o", filepath.Join(t.TempDir(), "q"), "--backend", "auto")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "mixq: using the CPU backend: ")
	code, stdout, _ := runCLI(t, "devices", "--json")
	require.Equal(t, 0, code)
	var rep devicesReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	require.Len(t, rep.Backends, 2)
	require.True(t, rep.Backends[0].Available)
	require.False(t, rep.Backends[1].Available)
	require.NotEmpty(t, rep.Backends[1].Detail)
	code, _, _ = runCLI(t, "bench", "--gpu-only", "--backend", "cuda", "--quick")
	require.Equal(t, 2, code)
}
