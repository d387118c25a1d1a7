package ctensors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/x448/float16"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
)

// Format is the compressed-tensors format name.
const Format = "pack-quantized"

// Tensor is one tensor of the mixq checkpoint: its name and record.
type Tensor struct {
	Name   string
	Record qformat.Record
}

// Options controls the export.
type Options struct {
	MaxShardSize int64
	// Extra are the non-weight files copied into the directory (tokenizer,
	// generation_config.json, ...).
	Extra []shards.Extra
}

// linearRe matches the weights of linear layers in Llama, Mistral and
// Mixtral checkpoints; packable marks those vLLM quantizes with
// compressed-tensors (the MoE router and lm_head are unquantized there).
var (
	linearRe   = regexp.MustCompile(`(_proj|\.experts\.\d+\.w[123]|\.block_sparse_moe\.gate|^lm_head)\.weight$`)
	packableRe = regexp.MustCompile(`(_proj|\.experts\.\d+\.w[123])\.weight$`)
)

type item struct {
	src    Tensor
	packed bool
	bits   int
	dtype  safetensors.DType // for floating-point outputs
	outs   []safetensors.Spec
}

// Export is a planned compressed-tensors directory.
type Export struct {
	Layout  *shards.Layout
	items   []item
	Notices []string
}

// QuantizationConfig is the quantization_config block written.
func quantizationConfig(groups map[[2]int][]string, ignore []string) map[string]any {
	keys := make([][2]int, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	cg := map[string]any{}
	for i, k := range keys {
		targets := slices.Clone(groups[k])
		sort.Strings(targets)
		cg[fmt.Sprintf("group_%d", i)] = map[string]any{
			"format":             Format,
			"input_activations":  nil,
			"output_activations": nil,
			"targets":            targets,
			"weights": map[string]any{
				"actorder":        nil,
				"block_structure": nil,
				"dynamic":         false,
				"group_size":      k[1],
				"num_bits":        k[0],
				"observer":        "minmax",
				"observer_kwargs": map[string]any{},
				"strategy":        "group",
				"symmetric":       true,
				"type":            "int",
			},
		}
	}
	sort.Strings(ignore)
	if ignore == nil {
		ignore = []string{}
	}
	return map[string]any{
		"config_groups":            cg,
		"format":                   Format,
		"global_compression_ratio": nil,
		"ignore":                   ignore,
		"kv_cache_scheme":          nil,
		"quant_method":             "compressed-tensors",
		"quantization_status":      "compressed",
		"sparsity_config":          map[string]any{},
	}
}

// Plan lays out the directory for the given tensors and config.json (the
// mixq output's; its quantization_config is replaced).
func Plan(config []byte, srcs []Tensor, opt Options) (*Export, error) {
	x := &Export{}
	groups := map[[2]int][]string{}
	var ignore []string
	var specs []safetensors.Spec
	for _, s := range srcs {
		r := s.Record
		it := item{src: s}
		module, isWeight := strings.CutSuffix(s.Name, ".weight")
		linear := isWeight && linearRe.MatchString(s.Name) && len(r.Shape) == 2
		if r.Precision == "int4" || r.Precision == "int8" {
			bits := 8
			if r.Precision == "int4" {
				bits = 4
			}
			pf := int64(32 / bits)
			rows, cols := int64(1), int64(1)
			if len(r.Shape) == 2 {
				rows, cols = r.Shape[0], r.Shape[1]
			}
			// A group longer than the row is the row: one scale per row,
			// written as that group size.
			g := min(int64(r.GroupSize), cols)
			why := ""
			switch {
			case !linear || !packableRe.MatchString(s.Name):
				why = "it is not a linear layer that vLLM quantizes"
			case cols%g != 0:
				why = fmt.Sprintf("its rows of %d are not a multiple of the group size %d", cols, g)
			case cols%pf != 0:
				why = fmt.Sprintf("its rows of %d are not a multiple of %d codes per int32", cols, pf)
			}
			if why == "" {
				it.packed, it.bits = true, bits
				it.outs = []safetensors.Spec{
					{Name: module + ".weight_packed", DType: safetensors.I32, Shape: []int64{rows, cols / pf}},
					{Name: module + ".weight_scale", DType: safetensors.F16, Shape: []int64{rows, cols / g}},
					{Name: module + ".weight_shape", DType: safetensors.I64, Shape: []int64{2}},
				}
				k := [2]int{bits, int(g)}
				groups[k] = append(groups[k], module)
			} else {
				x.Notices = append(x.Notices, fmt.Sprintf("%s (%s) is written dequantized as F32 (exact) because %s", s.Name, r.Precision, why))
				it.dtype = safetensors.F32
			}
		} else {
			switch r.Precision {
			case "f16":
				it.dtype = safetensors.F16
			case "f32":
				it.dtype = safetensors.F32
			case qformat.Keep:
				it.dtype = r.DType
			default:
				return nil, quant.InputError(&quant.TensorError{Tensor: s.Name, Err: fmt.Errorf("precision %q has no compressed-tensors form", r.Precision)})
			}
		}
		if !it.packed {
			it.outs = []safetensors.Spec{{Name: s.Name, DType: it.dtype, Shape: r.Shape}}
			if linear {
				ignore = append(ignore, module)
			}
		}
		specs = append(specs, it.outs...)
		x.items = append(x.items, it)
	}
	cfg, err := configJSON(config, quantizationConfig(groups, ignore))
	if err != nil {
		return nil, err
	}
	shard := opt.MaxShardSize
	l, err := shards.Plan(specs, shards.Options{MaxShardSize: shard, Config: cfg, Metadata: map[string]string{"format": "pt"}})
	if err != nil {
		return nil, err
	}
	l.Extra = opt.Extra
	x.Layout = l
	return x, nil
}

// configJSON is config.json without mixq's quantization_config, with the
// compressed-tensors one and torch_dtype float16.
func configJSON(config []byte, qc map[string]any) ([]byte, error) {
	return qformat.EditConfig(config, func(obj map[string]any) {
		obj["quantization_config"] = qc
		obj["torch_dtype"] = "float16"
	})
}

// PackRow packs one row of signed codes into int32 words as
// compressed-tensors' pack_to_int32 does: each code plus 2^(bits-1) as an
// unsigned bits-wide field, code k of a word in bits [k·bits, (k+1)·bits),
// the last word padded with zero fields. dst must hold
// ceil(len(codes)/(32/bits)) words.
func PackRow(dst []uint32, codes []int8, bits int) {
	pf := 32 / bits
	off := int32(1) << (bits - 1)
	mask := uint32(1)<<bits - 1
	clear(dst)
	for k, q := range codes {
		dst[k/pf] |= (uint32(int32(q)+off) & mask) << (bits * (k % pf))
	}
}

// UnpackRow is the inverse (unpack_from_int32): n signed codes.
func UnpackRow(dst []int8, words []uint32, bits int) {
	pf := 32 / bits
	off := int32(1) << (bits - 1)
	mask := uint32(1)<<bits - 1
	for k := range dst {
		dst[k] = int8(int32(words[k/pf]>>(bits*(k%pf))&mask) - off)
	}
}

// Write writes the planned directory to out from m (the checkpoint the
// plan was made from). replace lets a previous mixq output be replaced;
// the directory appears only when complete. progress, when set, gets each
// tensor's name and bytes written.
func (x *Export) Write(ctx context.Context, m *qformat.Model, out string, replace bool, progress func(string, int64)) error {
	w, err := shards.CreateLayout(out, x.Layout, replace)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	for _, it := range x.items {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, found := m.Lookup(it.src.Name)
		if !found || e.Record.Precision != it.src.Record.Precision || !slices.Equal(e.Record.Shape, it.src.Record.Shape) {
			return fmt.Errorf("tensor %q: the checkpoint does not match the plan", it.src.Name)
		}
		// The codes are read from the mapping: a file truncated or changed
		// under it faults, and that is an error naming it.
		var err error
		if ferr := fault.Catch(func() { err = x.tensor(ctx, w, m, e, it, progress) }); ferr != nil {
			err = quant.InputError(&quant.TensorError{File: e.File(), Tensor: it.src.Name, Err: ferr})
		}
		if err != nil {
			if te := (*quant.TensorError)(nil); errors.As(err, &te) {
				return err // it names the tensor already
			}
			return &quant.TensorError{Tensor: it.src.Name, Err: err}
		}
		m.Release(e)
	}
	if err := w.Close(); err != nil {
		return err
	}
	ok = true
	return nil
}

// rowsPerChunk bounds the memory of one write.
const chunkElems = 1 << 20

func (x *Export) tensor(ctx context.Context, w *shards.Writer, m *qformat.Model, e *qformat.Entry, it item, progress func(string, int64)) error {
	report := func(name string, n int) {
		if progress != nil {
			progress(name, int64(n))
		}
	}
	n := int(e.NumElements())
	cols := 1
	if len(e.Record.Shape) > 0 {
		cols = int(e.Record.Shape[len(e.Record.Shape)-1])
	}
	var packed []byte
	var scales []uint16
	var l quant.Layout
	if e.Layout.Precision.Quantized() {
		var err error
		if packed, scales, err = m.Codes(e); err != nil {
			return err
		}
		l = e.Layout
	}
	codes := make([]int8, cols)
	if it.packed {
		pf := 32 / it.bits
		words := make([]uint32, cols/pf)
		buf := make([]byte, 0, min(n, chunkElems)*4/pf+4*len(words))
		name := it.outs[0].Name
		for r := 0; r < l.Rows; r++ {
			quant.UnpackRow(codes, packed[r*l.RowBytes():(r+1)*l.RowBytes()], l.Precision)
			PackRow(words, codes, it.bits)
			for _, wd := range words {
				buf = binary.LittleEndian.AppendUint32(buf, wd)
			}
			if len(buf) >= chunkElems || r == l.Rows-1 {
				if err := w.Write(name, buf); err != nil {
					return err
				}
				report(name, len(buf))
				buf = buf[:0]
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		sb := make([]byte, 2*len(scales))
		for i, s := range scales {
			binary.LittleEndian.PutUint16(sb[2*i:], s)
		}
		if err := w.Write(it.outs[1].Name, sb); err != nil {
			return err
		}
		report(it.outs[1].Name, len(sb))
		shape := binary.LittleEndian.AppendUint64(nil, uint64(e.Record.Shape[0]))
		shape = binary.LittleEndian.AppendUint64(shape, uint64(e.Record.Shape[1]))
		if err := w.Write(it.outs[2].Name, shape); err != nil {
			return err
		}
		report(it.outs[2].Name, len(shape))
		return nil
	}
	rowsPer := max(1, chunkElems/max(cols, 1))
	f32 := make([]float32, min(n, rowsPer*cols))
	out := make([]byte, len(f32)*it.dtype.Size())
	for lo := 0; lo < n; lo += rowsPer * cols {
		hi := min(n, lo+rowsPer*cols)
		dst := f32[:hi-lo]
		if packed != nil {
			for r := lo / cols; r < hi/cols; r++ {
				quant.UnpackRow(codes, packed[r*l.RowBytes():(r+1)*l.RowBytes()], l.Precision)
				rs := scales[r*l.GroupsPerRow() : (r+1)*l.GroupsPerRow()]
				row := dst[(r-lo/cols)*cols:]
				for k, q := range codes {
					// ARITHMETIC.md §3: one f32 product, exact.
					row[k] = float32(q) * float16.Frombits(rs[k/l.GroupSize]).Float32()
				}
			}
		} else if err := e.DecodeRange(dst, lo, hi); err != nil {
			return err
		}
		b := out[:len(dst)*it.dtype.Size()]
		if err := checkpoint.EncodeFloat32(b, dst, it.dtype); err != nil {
			return err
		}
		if err := w.Write(it.src.Name, b); err != nil {
			return err
		}
		report(it.src.Name, len(b))
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
