package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/gguf"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Formats inspect reads besides mixq's own and the originals (issue 11):
// the two export formats, so a user can see what an export holds.
const (
	inspectGGUFName = "gguf"
	inspectCTName   = "compressed-tensors pack-quantized"
)

// isGGUF reports whether path is a file that starts with GGUF's magic.
func isGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "GGUF"
}

// inspectGGUF lists a GGUF file's tensors in row-major shape order, with
// their block type as precision: Q4_0 and Q8_0 are groups of 32 with an
// F16 scale each, which is how mixq's INT4 and INT8 map onto them.
func inspectGGUF(path string) (*inspectReport, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, quant.InputError(err)
	}
	defer g.Close()
	format := fmt.Sprintf("%s v%d", inspectGGUFName, g.Version)
	if a, ok := g.Get("general.architecture"); ok {
		format += fmt.Sprintf(", architecture %v", a)
	}
	rep := &inspectReport{Path: path, Quantized: true, Format: format, Files: []string{path}}
	for _, t := range g.Tensors {
		shape := make([]int64, len(t.Dims))
		for i, d := range t.Dims {
			shape[len(t.Dims)-1-i] = int64(d)
		}
		n := t.NumElements()
		if n < 0 || len(t.Dims) == 0 {
			return nil, quant.InputError(&quant.TensorError{File: path, Tensor: t.Name, Err: fmt.Errorf("shape %v overflows", shape)})
		}
		cols := int64(t.Dims[0])
		rb, err := t.Type.RowBytes(cols)
		if err != nil {
			return nil, quant.InputError(&quant.TensorError{File: path, Tensor: t.Name, Err: err})
		}
		it := inspectTensor{
			Name: t.Name, Component: ggufComponent(t.Name), Shape: shape,
			DType: safetensors.DType(t.Type.String()), StoredDType: safetensors.DType(t.Type.String()),
			Parameters: n, Bytes: rb * (n / max(cols, 1)), File: path,
		}
		switch t.Type {
		case gguf.Q4_0:
			it.Precision, it.GroupSize, it.EffectiveGroup = quant.INT4.String(), gguf.QK, gguf.QK
		case gguf.Q8_0:
			it.Precision, it.GroupSize, it.EffectiveGroup = quant.INT8.String(), gguf.QK, gguf.QK
		default:
			it.Precision = strings.ToLower(t.Type.String())
		}
		rep.add(it)
	}
	return rep, nil
}

// ctConfig is the part of a compressed-tensors quantization_config that
// inspect needs.
type ctConfig struct {
	QuantizationConfig *struct {
		QuantMethod  string `json:"quant_method"`
		Format       string `json:"format"`
		ConfigGroups map[string]struct {
			Weights struct {
				NumBits   int `json:"num_bits"`
				GroupSize int `json:"group_size"`
			} `json:"weights"`
		} `json:"config_groups"`
	} `json:"quantization_config"`
}

// compressedTensors returns the group sizes of a compressed-tensors
// checkpoint's config, or ok false when config is not one.
func compressedTensors(config []byte) (groups []int, ok bool) {
	var c ctConfig
	if json.Unmarshal(config, &c) != nil || c.QuantizationConfig == nil || c.QuantizationConfig.QuantMethod != "compressed-tensors" {
		return nil, false
	}
	for _, g := range c.QuantizationConfig.ConfigGroups {
		groups = append(groups, g.Weights.GroupSize)
	}
	slices.Sort(groups)
	return groups, true
}

// isCompressedTensors reports whether path is a directory (or a file in
// one) whose config.json says quant_method "compressed-tensors".
func isCompressedTensors(path string) bool {
	dir := path
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	raw, err := os.ReadFile(filepath.Join(dir, checkpoint.ConfigName))
	if err != nil {
		return false
	}
	_, ok := compressedTensors(raw)
	return ok
}

// inspectCT lists a compressed-tensors checkpoint: each packed module as
// one weight with its bits and effective group (read from the packed and
// scale shapes, which is what a loader uses), every other tensor as is.
func inspectCT(path string) (*inspectReport, error) {
	ck, err := checkpoint.Open(path, checkpoint.Options{AllowedDTypes: []safetensors.DType{
		safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.I32, safetensors.I64,
	}})
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	groups, _ := compressedTensors(ck.Config)
	rep := &inspectReport{Path: ck.Path, Quantized: true, Format: inspectCTName, Files: ck.ShardFiles()}
	for _, t := range ck.Tensors {
		module, isPacked := strings.CutSuffix(t.Name, ".weight_packed")
		switch {
		case strings.HasSuffix(t.Name, ".weight_scale"), strings.HasSuffix(t.Name, ".weight_shape"):
			continue // reported with their module
		case !isPacked:
			rep.add(inspectTensor{
				Name: t.Name, Component: policy.Classify(t.Name), Shape: t.Shape, DType: t.DType, StoredDType: t.DType,
				Precision: string(t.DType), Parameters: t.NumElements(), Bytes: int64(len(t.Raw())), File: t.File.Path(),
			})
			continue
		}
		bad := func(format string, args ...any) error {
			return quant.InputError(&quant.TensorError{File: t.File.Path(), Tensor: t.Name, Err: fmt.Errorf(format, args...)})
		}
		shapeT, ok1 := ck.Lookup(module + ".weight_shape")
		scaleT, ok2 := ck.Lookup(module + ".weight_scale")
		if !ok1 || !ok2 || shapeT.DType != safetensors.I64 || shapeT.NumElements() != 2 || len(scaleT.Shape) != 2 || len(t.Shape) != 2 {
			return nil, bad("a packed weight needs %s.weight_shape (I64, 2 values) and a 2-D %s.weight_scale", module, module)
		}
		raw := shapeT.Raw()
		rows, cols := int64(binary.LittleEndian.Uint64(raw)), int64(binary.LittleEndian.Uint64(raw[8:]))
		if rows != t.Shape[0] || cols <= 0 || t.Shape[1] <= 0 || scaleT.Shape[0] != rows || scaleT.Shape[1] <= 0 {
			return nil, bad("weight_shape [%d %d] does not match weight_packed %v and weight_scale %v", rows, cols, t.Shape, scaleT.Shape)
		}
		perWord := (cols + t.Shape[1] - 1) / t.Shape[1] // values per int32
		bits := 32 / perWord
		g := (cols + scaleT.Shape[1] - 1) / scaleT.Shape[1]
		// The config's group size, when one gives this many scales.
		for _, cg := range groups {
			if cg > 0 && (cols+int64(cg)-1)/int64(cg) == scaleT.Shape[1] {
				g = int64(cg)
				break
			}
		}
		prec := fmt.Sprintf("int%d", bits)
		rep.add(inspectTensor{
			Name: module + ".weight", Component: policy.Classify(module + ".weight"), Shape: []int64{rows, cols},
			DType: safetensors.DType(prec), StoredDType: safetensors.I32, Precision: prec,
			GroupSize: int(g), EffectiveGroup: int(min(g, cols)),
			Parameters: rows * cols, Bytes: int64(len(t.Raw()) + len(scaleT.Raw()) + len(raw)), File: t.File.Path(),
		})
	}
	return rep, nil
}

// ggufComponent classifies llama.cpp's tensor names as policy.Classify
// does Hugging Face's.
func ggufComponent(name string) policy.Component {
	switch {
	case strings.HasSuffix(name, "_norm.weight") || strings.HasSuffix(name, "_norm.bias"):
		return policy.Norm
	case strings.HasPrefix(name, "token_embd."):
		return policy.Embeddings
	case strings.HasPrefix(name, "output."):
		return policy.Head
	case strings.Contains(name, ".ffn_gate_inp."):
		return policy.Router
	case strings.Contains(name, "_exps."):
		return policy.Experts
	case strings.Contains(name, ".attn_"):
		return policy.Attention
	case strings.Contains(name, ".ffn_"):
		return policy.MLP
	}
	return policy.Other
}
