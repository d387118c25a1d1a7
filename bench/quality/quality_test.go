package main

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/policy"
)

// storiesDir is the shared real model, relative to this package.
const storiesDir = "../../../shared/testdata/stories260K"

func requireStories(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(storiesDir, "model.safetensors")); err != nil {
		t.Skipf("stories260K test model not available at %s: %v", storiesDir, err)
	}
	return storiesDir
}

// The report's numbers come from compare, not from eval.Evaluate; they
// must be eval's to the last bit, including when sequences of different
// lengths make eval score them out of index order.
func TestCompareMatchesEvaluate(t *testing.T) {
	dir := requireStories(t)
	be := cpu.New(0)
	ref, err := model.Load(dir, be)
	require.NoError(t, err)
	defer ref.Close()

	ck, err := mixq.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	rule, err := policy.ParseRule(".=int4")
	require.NoError(t, err)
	opt := mixq.Options{Policy: mixq.StaticPolicy(ck, []policy.Rule{rule}), Backend: be}
	plan, err := mixq.PlanQuantization(ck, opt)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "q")
	_, err = mixq.Quantize(context.Background(), ck, plan, out, opt)
	require.NoError(t, err)
	q, err := model.Load(out, be)
	require.NoError(t, err)
	defer q.Close()

	long, err := eval.Sample(ref, 3, 24, ref.Config.BOS, 1)
	require.NoError(t, err)
	short, err := eval.Sample(ref, 2, 9, ref.Config.BOS, 2)
	require.NoError(t, err)
	seqs := [][]int{long[0], short[0], long[1], short[1], long[2]}

	want, err := eval.Evaluate(ref, q, seqs, eval.Options{})
	require.NoError(t, err)
	r, err := newReference(context.Background(), ref, seqs)
	require.NoError(t, err)
	got, err := r.compare(context.Background(), q)
	require.NoError(t, err)

	// Timings differ between runs; everything else is exact.
	for _, res := range []*eval.Result{want, got} {
		res.Original.TokensPerSec = 0
		res.Quantized.TokensPerSec = 0
	}
	require.Greater(t, want.KLMean, 0.0, "an INT4 model that equals F32 would not test the comparison")
	assert.Equal(t, want, got)
}

func TestBPWFlagStaysWithinTheSize(t *testing.T) {
	const params = 5770496 // minillama
	target := func(b float64) (int64, error) { return int64(math.Floor(b * params / 8)), nil }
	for _, limit := range []int64{3276594, 3254000, 3600001, 1, 2 * params} {
		s, got, err := bpwFlag(params, limit, target)
		require.NoError(t, err, limit)
		assert.LessOrEqual(t, got, limit, "flag %s", s)
		// Four decimals of bits per weight are params/8·1e-4 bytes apart.
		assert.Greater(t, got, limit-params/8/10000-2, "flag %s aims needlessly low", s)
		assert.Len(t, s[strings.IndexByte(s, '.')+1:], 4, s)
	}
	_, _, err := bpwFlag(params, 4*params, target)
	assert.ErrorContains(t, err, "not smaller than F32")
}

func TestParsePresets(t *testing.T) {
	help := `Flags:
      --policy string           precision policy (default "static")
      --preset string           named setting that fixes --policy, the size and the group sizes:
                                int8: every matrix INT8, group 128 (about 3.9× smaller than FP32)
                                mixed-4.5bpw: budget: 4.5 bits per weight (7.1×), the size of Q4_0
                                (rounding: gptq with --calib-tokens/--calib-sample, else scale search)
      --rounding string         how INT8/INT4 scales and codes are chosen, inside the same format:
                                rtn: not a preset
`
	assert.Equal(t, []preset{
		{"int8", "every matrix INT8, group 128 (about 3.9× smaller than FP32)"},
		{"mixed-4.5bpw", "budget: 4.5 bits per weight (7.1×), the size of Q4_0"},
	}, parsePresets(help))
	assert.Empty(t, parsePresets("Flags:\n      --rounding string   x:\n                          rtn: absmax\n"))
}

// bench/llamacpp.json is written by another script; its shape may vary
// within what its header documents.
func TestReadLlamaTolerant(t *testing.T) {
	for name, text := range map[string]string{
		"nested objects": `{"version": "b4567", "date": "2026-12-02", "models": {"minillama": {"variants": {
			"Q4_0 --pure": {"command": "llama-quantize --pure f32.gguf q.gguf Q4_0", "file_bytes": 3300000, "bytes_without_vocab": 3270000,
				"ratio": 7.05, "ppl": 28.9, "dppl": 1.9, "kl_mean": 0.0062, "kl_p99": 0.05, "top1": 0.93},
			"Q4_K_M-imatrix": {"file_bytes": 3600000, "bytes_without_vocab": 3570000, "kl_mean": 0.003, "top1": 95.5}}}}}`,
		"list of records": `[{"model": "minillama", "variant": "Q4_0 --pure", "version": "b4567", "date": "2026-12-02",
			"command": ["llama-quantize", "--pure", "f32.gguf", "q.gguf", "Q4_0"], "file_bytes": 3300000, "bytes_without_vocab": 3270000,
			"eval": {"original": {"perplexity": 28.37}, "quantized": {"perplexity": 28.9}, "delta_perplexity_pct": 1.9, "kl_mean": 0.0062, "kl_p99": 0.05, "top1_agreement": 0.93}},
			{"model": "minillama", "variant": "Q4_K_M-imatrix", "file_bytes": 3600000, "bytes_without_vocab": 3570000, "kl_mean": 0.003, "top1_agreement": 0.955}]`,
		// the layout scripts/llama-quant-compare.sh documents
		"models[] with variants[]": `{"version": {"version": "b4567", "commit": "abc"}, "date": "2026-12-02", "machine": "vm",
			"models": [{"model": "minillama", "params": 5770496, "f32_bytes": 23081984, "ppl_f32": 28.37, "variants": [
				{"variant": "Q4_0 --pure", "command": "llama-quantize --pure f32.gguf q.gguf Q4_0", "file_bytes": 3300000, "bytes_without_vocab": 3270000,
				 "ratio": 7.05, "ppl": 28.9, "f32_ppl": 28.37, "delta_ppl_pct": 1.9, "kl_mean": 0.0062, "kl_p99": 0.05, "top1": 0.93},
				{"variant": "Q4_K_M-imatrix", "imatrix_command": "llama-imatrix ...", "command": "llama-quantize --imatrix m.dat f32.gguf q.gguf Q4_K_M",
				 "file_bytes": 3600000, "bytes_without_vocab": 3570000, "kl_mean": 0.003, "top1": 0.955}]},
			{"model": "stories260K", "variants": [{"variant": "q4_0", "file_bytes": 150000, "bytes_without_vocab": 150000}]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "llamacpp.json")
			require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
			s, err := readLlama(p)
			require.NoError(t, err)
			vs := s.forModel("minillama")
			require.Len(t, vs, 2)
			v := vs[0]
			if v.Variant != "Q4_0 --pure" {
				v = vs[1]
			}
			assert.Equal(t, "Q4_0 --pure", v.Variant)
			assert.Contains(t, v.Version, "b4567")
			assert.Equal(t, "2026-12-02", v.Date)
			assert.Equal(t, "llama-quantize --pure f32.gguf q.gguf Q4_0", v.Command)
			assert.Equal(t, int64(3270000), v.size())
			assert.Equal(t, 28.9, v.PPL)
			assert.Equal(t, 1.9, v.DPPL)
			assert.Equal(t, 0.0062, v.KLMean)
			assert.Equal(t, 0.05, v.KLP99)
			assert.Equal(t, 0.93, v.Top1)
			assert.Equal(t, "q4_0-pure", llamaKind(&v))
			for _, w := range vs {
				if w.Variant == "Q4_K_M-imatrix" {
					assert.Equal(t, "q4_k_m-imatrix", llamaKind(&w))
					assert.InDelta(t, 0.955, w.Top1, 1e-12, "a percentage is read as a share")
					assert.True(t, math.IsNaN(w.PPL), "a missing figure is NaN, not 0")
				}
			}
		})
	}
	_, err := readLlama(filepath.Join(t.TempDir(), "absent.json"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestLlamaKind(t *testing.T) {
	for name, want := range map[string]string{
		"Q4_0 --pure": "q4_0-pure", "q4_0-pure": "q4_0-pure", "Q4_0": "q4_0",
		"Q4_K_M imatrix": "q4_k_m-imatrix", "Q4_K_M": "q4_k_m", "Q4_K_M no-imatrix": "q4_k_m", "Q8_0": "",
	} {
		assert.Equal(t, want, llamaKind(&llamaVariant{Variant: name}), name)
	}
	assert.True(t, (&llamaVariant{Variant: "F32"}).baseline())
	assert.False(t, (&llamaVariant{Variant: "Q4_0"}).baseline())
}

// The verdicts are computed from the rows: a change in a number flips them.
func TestVerdictsFollowTheNumbers(t *testing.T) {
	mk := func(name string, bytes int64, klMean float64) *row {
		return &row{spec: spec{name: name}, bytes: bytes, res: &eval.Result{KLMean: klMean}}
	}
	v := &llamaVariant{Variant: "Q4_0", BytesWithoutVocab: 1000, KLMean: 0.004}
	for _, c := range []struct {
		r    *row
		want string
	}{
		{mk("a", 1000, 0.0039), "**met**"},
		{mk("a", 1000, 0.0019), "stretch goal, half of it, met too"},
		{mk("a", 1000, 0.004), "**not met**"},
		{mk("a", 1001, 0.001), "**not met** (larger)"},
	} {
		var b strings.Builder
		goalVsLlama(&b, "g", c.r, v)
		assert.Contains(t, b.String(), c.want, b.String())
	}
	for _, c := range []struct {
		a, b *row
		want string
	}{
		{mk("a", 90, 0.1), mk("b", 100, 0.2), "**met**"},
		{mk("a", 100, 0.3), mk("b", 100, 0.2), "**not met**"},
		{mk("a", 110, 0.1), mk("b", 100, 0.2), "**not met at equal size**"},
		{mk("a", 90, 0.3), mk("b", 100, 0.2), "10 B (10.00%) smaller"},
		{mk("a", 100, 0.2), mk("b", 100, 0.2), "**tie**"},
	} {
		var b strings.Builder
		versus(&b, "c", c.a, c.b)
		assert.Contains(t, b.String(), c.want, b.String())
	}
}

func TestShellJoin(t *testing.T) {
	assert.Equal(t, `mixq quantize 'a b' --rule .=int4 --rule '.*=f32' 'it'\''s'`,
		shellJoin([]string{"mixq", "quantize", "a b", "--rule", ".=int4", "--rule", ".*=f32", "it's"}))
}
