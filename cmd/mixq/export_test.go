package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/mixq/mixq/ctensors"
	"github.com/mixq/mixq/gguf"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/safetensors"
)

// minillama is the shared real Llama (with tokenizer.model); tests skip
// visibly without it.
func minillama(t *testing.T) string {
	t.Helper()
	in := filepath.Join("..", "..", "..", "shared", "testdata", "minillama")
	if _, err := os.Stat(filepath.Join(in, "model.safetensors")); err != nil {
		t.Skipf("minillama not available at %s: %v", in, err)
	}
	return in
}

// ggufPy finds llama.cpp's gguf-py and a python3 that can import it:
// MIXQ_GGUF_PY (the gguf-py directory) and MIXQ_PYTHON, else where
// scripts/install-gguf-py.sh puts it and the first python3 that imports it
// (numpy and yaml installed). why is the reason when either is missing.
func ggufPy() (python, pkg, why string) {
	pkg = os.Getenv("MIXQ_GGUF_PY")
	if pkg == "" {
		home, _ := os.UserHomeDir()
		pkg = filepath.Join(home, ".cache", "mixq", "llama.cpp", "gguf-py")
	}
	if _, err := os.Stat(filepath.Join(pkg, "gguf", "gguf_reader.py")); err != nil {
		return "", "", "gguf-py not found at " + pkg + " (run scripts/install-gguf-py.sh or set MIXQ_GGUF_PY)"
	}
	cands := []string{os.Getenv("MIXQ_PYTHON"), "python3", "/usr/bin/python3"}
	for _, p := range cands {
		if p == "" {
			continue
		}
		// Importing gguf checks numpy and gguf-py's other imports (yaml).
		cmd := exec.Command(p, "-c", "import gguf.quants")
		cmd.Env = append(os.Environ(), "PYTHONPATH="+pkg)
		if cmd.Run() == nil {
			return p, pkg, ""
		}
	}
	return "", "", "no python3 that imports gguf-py (apt-get install python3-numpy python3-yaml, or set MIXQ_PYTHON)"
}

// checkWithGGUFPy runs scripts/gguf_check.py: gguf-py's own reader and
// dequantizer against `mixq dequantize` of the same checkpoint.
func checkWithGGUFPy(t *testing.T, file, q, config string, extra ...string) {
	t.Helper()
	python, pkg, why := ggufPy()
	if why != "" {
		t.Skipf("gguf-py check skipped: %s", why)
	}
	deq := filepath.Join(t.TempDir(), "deq")
	code, _, stderr := runCLI(t, "dequantize", q, "-o", deq, "--dtype", "f32")
	require.Equal(t, 0, code, stderr)
	args := append([]string{filepath.Join("..", "..", "scripts", "gguf_check.py"), file, deq, config}, extra...)
	cmd := exec.Command(python, args...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pkg)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "gguf-py check of %s:\n%s", file, out)
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// readGGUF opens an exported file with our reader, for the Go-side checks
// that run without Python.
func readGGUF(t *testing.T, path string) *gguf.File {
	t.Helper()
	g, err := gguf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	return g
}

func noPanic(t *testing.T, stderr string) {
	t.Helper()
	assert.NotContains(t, stderr, "panic")
	assert.NotContains(t, stderr, "goroutine ")
}

// The GGUF of minillama, under the static policy (INT8 group 128, F16
// embeddings) and all-INT4 group 64 (Q4_0 with the scale repeated per
// 32-block), decodes in gguf-py to exactly `mixq dequantize`'s floats, and
// `estimate --format gguf` predicts its size to the byte.
func TestGGUFExportOfMinillama(t *testing.T) {
	in := minillama(t)
	for _, tc := range []struct {
		name  string
		flags []string
		types map[string]int
	}{
		{"static", nil, map[string]int{"Q8_0": 42, "F16": 2, "F32": 13}},
		{"int4-g64", []string{"--rule", ".*=int4", "--group-size", "64"}, map[string]int{"Q4_0": 44, "F32": 13}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// The directory is named like the input so that general.name,
			// and with it the size, is the one estimate predicts.
			q, file := filepath.Join(dir, "minillama"), filepath.Join(dir, "m.gguf")
			code, _, stderr := runCLI(t, append([]string{"quantize", in, "-o", q}, tc.flags...)...)
			require.Equal(t, 0, code, stderr)
			code, stdout, stderr := runCLI(t, append([]string{"estimate", in, "--format", "gguf", "--json"}, tc.flags...)...)
			require.Equal(t, 0, code, stderr)
			var est foreignEstimate
			require.NoError(t, json.Unmarshal([]byte(stdout), &est))
			assert.Equal(t, tc.types, est.Tensors)

			code, _, stderr = runCLI(t, "export", q, "-o", file, "--format", "gguf", "--tokenizer-dir", in)
			require.Equal(t, 0, code, stderr)
			st, err := os.Stat(file)
			require.NoError(t, err)
			assert.Equal(t, est.Bytes, st.Size(), "estimate --format gguf is exact")

			g := readGGUF(t, file)
			arch, _ := g.Get("general.architecture")
			assert.Equal(t, "llama", arch)
			heads, _ := g.Get("llama.attention.head_count_kv")
			assert.Equal(t, uint32(4), heads)
			toks, _ := g.Get("tokenizer.ggml.tokens")
			require.Len(t, toks, 2048)
			assert.Equal(t, "<s>", toks.([]string)[1])
			types, _ := g.Get("tokenizer.ggml.token_type")
			assert.Equal(t, []int32{2, 3, 3, 6}, types.([]int32)[:4], "unk, control <s> </s>, byte <0x00>")

			code, _, stderr = runCLI(t, "export", q, "-o", file, "--format", "gguf", "--tokenizer-dir", in)
			assert.Equal(t, 2, code, "an existing output needs --force")
			assert.Contains(t, stderr, "--force")
			if safeout.CanMark(dir) {
				code, _, stderr = runCLI(t, "export", q, "-o", file, "--format", "gguf", "--tokenizer-dir", in, "--force")
				assert.Equal(t, 0, code, stderr)
			} else {
				t.Logf("%s keeps no user extended attributes: not testing --force over the GGUF", dir)
			}

			// --vocab-from takes the vocabulary of another GGUF as it is.
			borrowed := filepath.Join(dir, "borrowed.gguf")
			code, _, stderr = runCLI(t, "export", q, "-o", borrowed, "--format", "gguf", "--vocab-from", file, "--tokenizer-dir", t.TempDir())
			require.Equal(t, 0, code, stderr)
			b := readGGUF(t, borrowed)
			for _, kv := range g.KVs {
				if strings.HasPrefix(kv.Key, "tokenizer.") {
					v, ok := b.Get(kv.Key)
					assert.True(t, ok, kv.Key)
					assert.Equal(t, kv.Value, v, kv.Key)
				}
			}

			checkWithGGUFPy(t, file, q, filepath.Join(in, "config.json"))
		})
	}
}

// A Mixtral-like MoE whose experts have mixed precisions (stacked as the
// one lossless type), and a Llama with rows of 172 (F16 fallback), checked
// with gguf-py; neither has a tokenizer, so --no-vocab.
func TestGGUFExportOfSyntheticModels(t *testing.T) {
	for _, tc := range []struct {
		preset string
		flags  []string
		notice string
	}{
		{"tiny-moe", []string{"--rule", `experts\.[02]\.=int8`, "--rule", `experts\.1\.w1=f16`}, "stacked as F32"},
		{"tiny-moe", nil, ""},
		{"tiny", nil, "not a multiple of 32"},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			dir := t.TempDir()
			in, q, file := filepath.Join(dir, "in"), filepath.Join(dir, "q"), filepath.Join(dir, "m.gguf")
			code, _, stderr := runCLI(t, "synth", "--preset", tc.preset, "-o", in)
			require.Equal(t, 0, code, stderr)
			code, _, stderr = runCLI(t, append([]string{"quantize", in, "-o", q}, tc.flags...)...)
			require.Equal(t, 0, code, stderr)

			code, _, stderr = runCLI(t, "export", q, "-o", file, "--format", "gguf")
			assert.Equal(t, 2, code, "no tokenizer is an input error")
			assert.Contains(t, stderr, "no tokenizer.model or tokenizer.json")
			noPanic(t, stderr)
			_, err := os.Stat(file)
			assert.True(t, os.IsNotExist(err), "nothing written")

			code, _, stderr = runCLI(t, "export", q, "-o", file, "--format", "gguf", "--no-vocab")
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, stderr, tc.notice)
			g := readGGUF(t, file)
			if tc.preset == "tiny-moe" {
				n, _ := g.Get("llama.expert_count")
				assert.Equal(t, uint32(4), n)
				ti, ok := g.Tensor("blk.0.ffn_gate_exps.weight")
				require.True(t, ok)
				assert.Equal(t, []uint64{64, 128, 4}, ti.Dims, "[experts, ff, embd] in ggml order")
			}
			checkWithGGUFPy(t, file, q, filepath.Join(in, "config.json"), "--no-vocab")
		})
	}
}

// Bad input exits 2 and names what is wrong; nothing is written.
func TestExportBadInput(t *testing.T) {
	dir := t.TempDir()
	in, q := filepath.Join(dir, "in"), filepath.Join(dir, "q")
	code, _, stderr := runCLI(t, "synth", "--preset", "tiny", "-o", in)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)

	// A copy of q with other companions or config, made per case.
	variant := func(name string, edit func(dir string)) string {
		v := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(v, 0o755))
		for _, f := range []string{"config.json", "model.safetensors"} {
			b, err := os.ReadFile(filepath.Join(q, f))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(v, f), b, 0o644))
		}
		edit(v)
		return v
	}
	gpt2 := variant("gpt2", func(v string) {
		p := filepath.Join(v, "config.json")
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(b), "LlamaForCausalLM", "GPT2LMHeadModel", 1)), 0o644))
	})
	badSPM := variant("badspm", func(v string) {
		require.NoError(t, os.WriteFile(filepath.Join(v, "tokenizer.model"), []byte("\xff\xff\xff\xff not a protobuf"), 0o644))
	})
	badJSON := variant("badjson", func(v string) {
		require.NoError(t, os.WriteFile(filepath.Join(v, "tokenizer.json"), []byte("{\"model\": [1,"), 0o644))
	})
	notGGUF := filepath.Join(dir, "notes.gguf")
	require.NoError(t, os.WriteFile(notGGUF, []byte("my notes"), 0o644))

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"architecture", []string{"export", gpt2, "-o", filepath.Join(dir, "a.gguf"), "--format", "gguf", "--no-vocab"}, "GPT2LMHeadModel"},
		{"tokenizer.model", []string{"export", badSPM, "-o", filepath.Join(dir, "b.gguf"), "--format", "gguf"}, filepath.Join(badSPM, "tokenizer.model")},
		{"tokenizer.json", []string{"export", badJSON, "-o", filepath.Join(dir, "c.gguf"), "--format", "gguf"}, filepath.Join(badJSON, "tokenizer.json")},
		{"vocab-from not gguf", []string{"export", q, "-o", filepath.Join(dir, "d.gguf"), "--format", "gguf", "--vocab-from", notGGUF}, notGGUF},
		{"not a mixq output", []string{"export", in, "-o", filepath.Join(dir, "e.gguf"), "--format", "gguf"}, "mixq"},
		{"no format", []string{"export", q, "-o", filepath.Join(dir, "f.gguf")}, "--format"},
		{"unknown format", []string{"export", q, "-o", filepath.Join(dir, "f.gguf"), "--format", "onnx"}, "onnx"},
		{"foreign file", []string{"export", q, "-o", notGGUF, "--format", "gguf", "--no-vocab", "--force"}, notGGUF},
		{"into the input", []string{"export", q, "-o", filepath.Join(q, "m.gguf"), "--format", "gguf", "--no-vocab"}, "inside the input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			assert.Equal(t, 2, code, stderr)
			assert.Contains(t, stderr, tc.want)
			noPanic(t, stderr)
		})
	}
	for _, f := range []string{"a.gguf", "b.gguf", "c.gguf", "d.gguf", "e.gguf", "f.gguf"} {
		_, err := os.Stat(filepath.Join(dir, f))
		assert.True(t, os.IsNotExist(err), "%s must not exist", f)
	}
	b, err := os.ReadFile(notGGUF)
	require.NoError(t, err)
	assert.Equal(t, "my notes", string(b), "a file mixq did not write is never replaced")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		assert.NotContains(t, e.Name(), "tmp", "no temporary left behind")
	}
}

// The compressed-tensors directory holds the same codes and scales: every
// weight_packed unpacks (with the format's own rule) to the mixq codes, and
// packed · scale gives mixq dequantize's floats bit for bit; the config
// lists each quantized module once and every unquantized linear in ignore.
func TestCompressedTensorsExport(t *testing.T) {
	dir := t.TempDir()
	in, q, ct, deq := filepath.Join(dir, "in"), filepath.Join(dir, "q"), filepath.Join(dir, "ct"), filepath.Join(dir, "deq")
	code, _, stderr := runCLI(t, "synth", "--preset", "tiny-moe", "-o", in)
	require.Equal(t, 0, code, stderr)
	tcJSON := []byte(`{"bos_token": "<s>"}`)
	require.NoError(t, os.WriteFile(filepath.Join(in, "tokenizer_config.json"), tcJSON, 0o644))
	// Attention INT8 (default), experts INT4, one expert F16: three kinds.
	code, _, stderr = runCLI(t, "quantize", in, "-o", q, "--group-size", "32", "--rule", `layers\.1\.block_sparse_moe\.experts\.3\.w2=f16`)
	require.Equal(t, 0, code, stderr)
	if _, err := os.Stat(filepath.Join(q, "tokenizer_config.json")); err != nil {
		// quantize does not carry companion files (yet): put it where
		// export reads it.
		require.NoError(t, os.WriteFile(filepath.Join(q, "tokenizer_config.json"), tcJSON, 0o644))
	}
	code, stdout, stderr := runCLI(t, "estimate", in, "--format", "compressed-tensors", "--json", "--group-size", "32", "--rule", `layers\.1\.block_sparse_moe\.experts\.3\.w2=f16`)
	require.Equal(t, 0, code, stderr)
	var est foreignEstimate
	require.NoError(t, json.Unmarshal([]byte(stdout), &est))

	code, _, stderr = runCLI(t, "export", q, "-o", ct, "--format", "compressed-tensors")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "dequantize", q, "-o", deq)
	require.Equal(t, 0, code, stderr)
	tc, err := os.ReadFile(filepath.Join(ct, "tokenizer_config.json"))
	require.NoError(t, err)
	assert.JSONEq(t, `{"bos_token": "<s>"}`, string(tc), "companion files are carried")

	var cfg struct {
		TorchDType string `json:"torch_dtype"`
		QC         struct {
			QuantMethod  string `json:"quant_method"`
			Format       string `json:"format"`
			ConfigGroups map[string]struct {
				Targets []string `json:"targets"`
				Weights struct {
					NumBits   int    `json:"num_bits"`
					GroupSize int    `json:"group_size"`
					Strategy  string `json:"strategy"`
					Symmetric bool   `json:"symmetric"`
					Type      string `json:"type"`
				} `json:"weights"`
			} `json:"config_groups"`
			Ignore []string `json:"ignore"`
		} `json:"quantization_config"`
	}
	raw, err := os.ReadFile(filepath.Join(ct, "config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &cfg))
	assert.Equal(t, "compressed-tensors", cfg.QC.QuantMethod)
	assert.Equal(t, "pack-quantized", cfg.QC.Format)
	assert.Equal(t, "float16", cfg.TorchDType)
	bits := map[string]int{}
	for _, g := range cfg.QC.ConfigGroups {
		assert.Equal(t, "group", g.Weights.Strategy)
		assert.True(t, g.Weights.Symmetric)
		assert.Equal(t, "int", g.Weights.Type)
		assert.Equal(t, 32, g.Weights.GroupSize)
		for _, m := range g.Targets {
			_, dup := bits[m]
			assert.False(t, dup, "%s in two groups", m)
			bits[m] = g.Weights.NumBits
		}
	}
	assert.Len(t, cfg.QC.ConfigGroups, 2, "int4/32 and int8/32")
	assert.Equal(t, 4, bits["model.layers.0.block_sparse_moe.experts.0.w1"])
	assert.Equal(t, 8, bits["model.layers.0.self_attn.q_proj"])
	assert.Contains(t, cfg.QC.Ignore, "model.layers.1.block_sparse_moe.experts.3.w2")
	assert.Contains(t, cfg.QC.Ignore, "model.layers.0.block_sparse_moe.gate")
	assert.Contains(t, cfg.QC.Ignore, "lm_head")

	st, err := safetensors.Open(filepath.Join(ct, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	ref, err := safetensors.Open(filepath.Join(deq, "model.safetensors"))
	require.NoError(t, err)
	defer ref.Close()
	qm, err := qformat.Open(q)
	require.NoError(t, err)
	defer qm.Close()
	for _, e := range qm.Entries {
		ri, ok := ref.Header().Lookup(e.Name)
		require.True(t, ok, e.Name)
		want := f32s(ref.Data(ri))
		module, _ := strings.CutSuffix(e.Name, ".weight")
		if b, ok := bits[module]; ok {
			pi, ok1 := st.Header().Lookup(module + ".weight_packed")
			si, ok2 := st.Header().Lookup(module + ".weight_scale")
			hi, ok3 := st.Header().Lookup(module + ".weight_shape")
			require.True(t, ok1 && ok2 && ok3, module)
			assert.Equal(t, safetensors.I32, pi.DType)
			assert.Equal(t, safetensors.F16, si.DType)
			assert.Equal(t, safetensors.I64, hi.DType)
			shape := st.Data(hi)
			assert.Equal(t, e.Record.Shape, []int64{int64(binary.LittleEndian.Uint64(shape)), int64(binary.LittleEndian.Uint64(shape[8:]))})
			rows, cols := int(e.Record.Shape[0]), int(e.Record.Shape[1])
			words := u32s(st.Data(pi))
			scales := st.Data(si)
			g := e.Record.GroupSize
			codes := make([]int8, cols)
			pf := 32 / b
			for r := 0; r < rows; r++ {
				ctensors.UnpackRow(codes, words[r*cols/pf:(r+1)*cols/pf], b)
				for k, c := range codes {
					s := float16.Frombits(binary.LittleEndian.Uint16(scales[2*(r*(cols/g)+k/g):])).Float32()
					got := float32(c) * s
					if math.Float32bits(got) != math.Float32bits(want[r*cols+k]) {
						require.Failf(t, "value differs", "%s[%d,%d]: packed·scale %v, mixq dequantize %v", e.Name, r, k, got, want[r*cols+k])
					}
				}
			}
			continue
		}
		ti, ok := st.Header().Lookup(e.Name)
		require.True(t, ok, e.Name)
		got := make([]float32, ti.NumElements())
		require.NoError(t, floatsOf(got, st.Data(ti), ti.DType))
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				require.Failf(t, "value differs", "%s[%d]: %v vs mixq dequantize %v", e.Name, i, got[i], want[i])
			}
		}
	}
	total, err := dirBytes(ct)
	require.NoError(t, err)
	assert.Equal(t, est.Bytes, total, "estimate --format compressed-tensors is exact")
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func u32s(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func floatsOf(dst []float32, b []byte, dt safetensors.DType) error {
	switch dt {
	case safetensors.F32:
		copy(dst, f32s(b))
	case safetensors.F16:
		for i := range dst {
			dst[i] = float16.Frombits(binary.LittleEndian.Uint16(b[2*i:])).Float32()
		}
	case safetensors.BF16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	}
	return nil
}

func dirBytes(dir string) (int64, error) {
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += info.Size()
	}
	return n, nil
}

// quantize --format gguf writes the same bytes as quantize then export,
// the size estimate predicted, and leaves no temporary behind; bad input
// for the format is refused before any quantization.
func TestQuantizeFormat(t *testing.T) {
	in := minillama(t)
	dir := t.TempDir()
	q, exported, direct := filepath.Join(dir, "minillama"), filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "export", q, "-o", exported, "--format", "gguf")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "quantize", in, "-o", direct, "--format", "gguf")
	require.Equal(t, 0, code, stderr)
	a, err := os.ReadFile(exported)
	require.NoError(t, err)
	b, err := os.ReadFile(direct)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(a, b), "quantize --format gguf and quantize + export give the same file")
	code, stdout, stderr := runCLI(t, "estimate", in, "--format", "gguf", "--json")
	require.Equal(t, 0, code, stderr)
	var est foreignEstimate
	require.NoError(t, json.Unmarshal([]byte(stdout), &est))
	assert.Equal(t, int64(len(b)), est.Bytes)

	ct := filepath.Join(dir, "ct")
	code, _, stderr = runCLI(t, "quantize", in, "-o", ct, "--format", "compressed-tensors")
	require.Equal(t, 0, code, stderr)
	_, err = os.Stat(filepath.Join(ct, "tokenizer.model"))
	assert.NoError(t, err, "the tokenizer is carried")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"minillama", "a.gguf", "b.gguf", "ct"}, names, "no temporary left")

	syn := filepath.Join(dir, "syn")
	code, _, stderr = runCLI(t, "synth", "--preset", "tiny", "-o", syn)
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI(t, "quantize", syn, "-o", filepath.Join(dir, "c.gguf"), "--format", "gguf")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "no tokenizer")
	noPanic(t, stderr)
	code, _, stderr = runCLI(t, "quantize", syn, "-o", filepath.Join(dir, "c.gguf"), "--format", "gguf", "--no-vocab")
	assert.Equal(t, 0, code, stderr)
}

// A budget output with group sizes chosen per tensor exports to GGUF (every
// group a whole number of 32-blocks: the scale repeats per block) that
// gguf-py decodes to exactly `mixq dequantize`'s floats.
func TestGGUFExportOfMixedGroupSizes(t *testing.T) {
	in := minillama(t)
	dir := t.TempDir()
	q, file := filepath.Join(dir, "minillama"), filepath.Join(dir, "m.gguf")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q, "--policy", "budget", "--target-ratio", "6")
	require.Equal(t, 0, code, stderr)
	groups := map[int]bool{}
	for _, tt := range inspectJSON(t, q).Tensors {
		if tt.GroupSize > 0 {
			groups[tt.GroupSize] = true
		}
	}
	require.Greater(t, len(groups), 1, "the budget mixed group sizes (else this test checks nothing new): %v", groups)
	code, _, stderr = runCLI(t, "export", q, "-o", file, "--format", "gguf", "--tokenizer-dir", in)
	require.Equal(t, 0, code, stderr)
	checkWithGGUFPy(t, file, q, filepath.Join(in, "config.json"))
}
