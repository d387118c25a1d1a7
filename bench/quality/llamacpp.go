package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// llamaVariant is one llama.cpp quantization of a model as
// scripts/llama-quant-compare.sh measured it (bench/llamacpp.json). A
// figure the file lacks is NaN (bytes: 0).
type llamaVariant struct {
	Model, Variant, Version, Command, Date string
	FileBytes, BytesWithoutVocab           int64
	Ratio, PPL, DPPL, KLMean, KLP99, Top1  float64
	// BasePPL is the F32 perplexity the file reports beside it, if any.
	BasePPL float64
}

// size is the byte count mixq is matched against: the GGUF without its
// vocabulary (mixq carries the tokenizer as separate files that its size
// does not count), else the whole file.
func (v *llamaVariant) size() int64 {
	if v.BytesWithoutVocab > 0 {
		return v.BytesWithoutVocab
	}
	return v.FileBytes
}

// baseline is the unquantized GGUF (F32/F16/BF16), which the file may
// hold as a check and which no mixq row is matched to.
func (v *llamaVariant) baseline() bool {
	n := strings.ToLower(v.Variant)
	for _, p := range []string{"f32", "f16", "bf16", "fp32", "fp16"} {
		if n == p || strings.HasPrefix(n, p+"-") || strings.HasPrefix(n, p+"_") || strings.HasPrefix(n, p+" ") {
			return true
		}
	}
	return false
}

type llamaSet []llamaVariant

func (s llamaSet) forModel(model string) []llamaVariant {
	var out []llamaVariant
	for _, v := range s {
		if strings.EqualFold(v.Model, model) {
			out = append(out, v)
		}
	}
	return out
}

// readLlama reads bench/llamacpp.json tolerantly: any object holding
// file_bytes or bytes_without_vocab is a variant; its model and variant
// are its own fields (model, variant or name) or else the keys it is
// found under, and the version, date and command may sit on any object
// above it. An absent file is os.ErrNotExist.
func readLlama(path string) (llamaSet, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out llamaSet
	walk(v, nil, map[string]any{}, &out)
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no variant with file_bytes or bytes_without_vocab", path)
	}
	return out, nil
}

// inherited are the scalar fields an object passes down to its variants.
var inherited = []string{"version", "llama_cpp_version", "llama.cpp", "tag", "date", "machine", "model"}

func walk(v any, keys []string, up map[string]any, out *llamaSet) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			walk(e, keys, up, out)
		}
	case map[string]any:
		if _, ok := num(x, "file_bytes", "bytes_without_vocab"); ok {
			*out = append(*out, variantOf(x, keys, up))
			return
		}
		down := map[string]any{}
		for k, e := range up {
			down[k] = e
		}
		for _, k := range inherited {
			if e, ok := x[k]; ok {
				if str := scalarString(e); str != "" {
					down[k] = str
				}
			}
		}
		names := make([]string, 0, len(x))
		for k := range x {
			names = append(names, k)
		}
		sort.Strings(names) // a stable order of variants under object keys
		for _, k := range names {
			walk(x[k], append(keys[:len(keys):len(keys)], k), down, out)
		}
	}
}

func variantOf(x map[string]any, keys []string, up map[string]any) llamaVariant {
	field := func(names ...string) string {
		for _, n := range names {
			if s := scalarString(x[n]); s != "" {
				return s
			}
		}
		for _, n := range names {
			if s, ok := up[n].(string); ok && s != "" {
				return s
			}
		}
		return ""
	}
	v := llamaVariant{
		Variant: field("variant", "name", "type"),
		Model:   field("model"),
		Version: field("version", "llama_cpp_version", "llama.cpp", "tag"),
		Command: field("command", "quantize_command", "llama_quantize"),
		Date:    field("date"),
	}
	if cmd, ok := x["command"].([]any); ok && v.Command == "" {
		var w []string
		for _, e := range cmd {
			w = append(w, fmt.Sprint(e))
		}
		v.Command = strings.Join(w, " ")
	}
	// Without its own fields, the keys above it name the model and the
	// variant.
	for _, k := range keys {
		if v.Model == "" && (strings.Contains(strings.ToLower(k), "minillama") || strings.Contains(strings.ToLower(k), "stories")) {
			v.Model = k
		}
	}
	if v.Variant == "" && len(keys) > 0 {
		v.Variant = keys[len(keys)-1]
	}
	if strings.Contains(strings.ToLower(v.Model), "stories") {
		v.Model = "stories260K"
	} else if strings.Contains(strings.ToLower(v.Model), "minillama") {
		v.Model = "minillama"
	}
	f, _ := num(x, "file_bytes", "bytes")
	v.FileBytes = int64(f)
	b, _ := num(x, "bytes_without_vocab")
	v.BytesWithoutVocab = int64(b)
	v.Ratio = numOr(x, "ratio", "ratio_vs_f32", "compression_ratio")
	v.PPL = numOr(x, "ppl", "perplexity", "quantized.perplexity", "eval.quantized.perplexity")
	v.DPPL = numOr(x, "dppl", "delta_ppl_pct", "delta_ppl", "delta_perplexity_pct", "dppl_pct", "eval.delta_perplexity_pct")
	v.KLMean = numOr(x, "kl_mean", "mean_kl", "kl.mean", "eval.kl_mean")
	v.KLP99 = numOr(x, "kl_p99", "p99_kl", "kl.p99", "eval.kl_p99")
	v.Top1 = numOr(x, "top1", "top1_agreement", "top_1", "eval.top1_agreement")
	if v.Top1 > 1 { // a percentage
		v.Top1 /= 100
	}
	v.BasePPL = numOr(x, "f32_ppl", "base_ppl", "original.perplexity", "eval.original.perplexity")
	return v
}

// scalarString is a string or number as text, or an object of them as
// "k: v, ..." (a version recorded with its commit and source); "" for
// anything else.
func scalarString(e any) string {
	switch x := e.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			if _, nested := x[k].(map[string]any); nested {
				continue
			}
			if v := scalarString(x[k]); v != "" {
				parts = append(parts, k+": "+v)
			}
		}
		return strings.Join(parts, ", ")
	}
	return ""
}

// num is the first of the named fields that is a number (a dotted name
// looks into nested objects).
func num(x map[string]any, names ...string) (float64, bool) {
	for _, n := range names {
		var cur any = x
		for _, part := range strings.Split(n, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[part]
		}
		if f, ok := cur.(float64); ok {
			return f, true
		}
	}
	return 0, false
}

func numOr(x map[string]any, names ...string) float64 {
	if f, ok := num(x, names...); ok {
		return f
	}
	return math.NaN()
}

// llamaKind names the variants the goals refer to: "q4_0-pure", "q4_0",
// "q4_k_m-imatrix", "q4_k_m"; "" for others.
func llamaKind(v *llamaVariant) string {
	n := strings.ToLower(v.Variant + " " + v.Command)
	name := strings.ToLower(v.Variant)
	imatrix := strings.Contains(n, "imatrix") && !strings.Contains(name, "no-imatrix") && !strings.Contains(name, "no_imatrix") &&
		!strings.Contains(name, "noimatrix") && !strings.Contains(name, "without")
	switch {
	case strings.Contains(name, "q4_0") && strings.Contains(n, "pure"):
		return "q4_0-pure"
	case strings.Contains(name, "q4_0") && !imatrix:
		return "q4_0"
	case strings.Contains(name, "q4_k_m") && imatrix:
		return "q4_k_m-imatrix"
	case strings.Contains(name, "q4_k_m"):
		return "q4_k_m"
	}
	return ""
}
