package qformat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
)

// Format identifies the layout version in every shard's metadata.
const Format = "mixq/1"

// Metadata keys.
const (
	FormatKey    = "mixq.format"
	RecordPrefix = "mixq:"
	QWeight      = ".qweight"
	Scales       = ".scales"
)

// Keep is the Record precision of a tensor copied unchanged.
const Keep = "keep"

// Record is the per-tensor metadata entry: how an original tensor is stored.
type Record struct {
	Precision string            `json:"precision"`
	GroupSize int               `json:"group_size,omitempty"`
	DType     safetensors.DType `json:"dtype"`
	Shape     []int64           `json:"shape"`
}

// Input is what planning needs to know of an input tensor: its header.
type Input struct {
	Name  string
	DType safetensors.DType
	Shape []int64
}

// NumElements is the product of the shape.
func (in Input) NumElements() int64 {
	n := int64(1)
	for _, d := range in.Shape {
		n *= d
	}
	return n
}

// Item is the plan for one input tensor.
type Item struct {
	Input    Input
	Decision policy.Decision
	Record   Record
	// Layout is set for INT8 and INT4.
	Layout quant.Layout
	// Outputs are the tensors written for this input, in file order.
	Outputs []safetensors.Spec
}

// Bytes is the data size of the item's outputs.
func (it *Item) Bytes() int64 {
	var n int64
	for _, s := range it.Outputs {
		n += s.Bytes()
	}
	return n
}

// Options controls planning.
type Options struct {
	GroupSize    int
	MaxShardSize int64
	// Config is the input's config.json (nil when there is none).
	Config []byte
	// PolicyName is recorded in quantization_config ("static", ...).
	PolicyName string
}

// Plan is the complete description of a quantized output.
type Plan struct {
	Items     []Item
	GroupSize int
	Layout    *shards.Layout
}

// Decide chooses a precision for a tensor; policy.Static.Decide is one.
type Decide func(policy.Tensor) policy.Decision

// Build plans the output for the given inputs, in input order.
func Build(inputs []Input, decide Decide, opt Options) (*Plan, error) {
	g := opt.GroupSize
	if g == 0 {
		g = quant.DefaultGroupSize
	}
	if g < 1 || g > quant.MaxGroupSize {
		return nil, quant.InputError(fmt.Errorf("group size %d is impossible: want 1..%d", g, quant.MaxGroupSize))
	}
	p := &Plan{GroupSize: g}
	var specs []safetensors.Spec
	recs := map[string]string{}
	keys := map[string]string{}  // output tensor → metadata key of its record
	owner := map[string]string{} // output tensor → input tensor
	counts := map[string]int{}
	groups := map[int]int{} // group size → quantized tensors
	for _, in := range inputs {
		d := decide(policy.Tensor{Name: in.Name, Shape: in.Shape})
		// The format's own rules hold whatever a policy says: vectors,
		// scalars and empty tensors are stored as they are.
		switch {
		case d.Keep:
		case len(in.Shape) < 2:
			d.Keep, d.Reason = true, fmt.Sprintf("rank-%d tensors are kept as they are", len(in.Shape))
		case in.NumElements() == 0:
			d.Keep, d.Reason = true, "empty tensors are kept as they are"
		}
		it := Item{Input: in, Decision: d, Record: Record{DType: in.DType, Shape: in.Shape}}
		switch {
		case d.Keep:
			it.Record.Precision = Keep
			it.Outputs = []safetensors.Spec{{Name: in.Name, DType: in.DType, Shape: in.Shape}}
		case d.Precision == quant.F32:
			it.Record.Precision = d.Precision.String()
			it.Outputs = []safetensors.Spec{{Name: in.Name, DType: safetensors.F32, Shape: in.Shape}}
		case d.Precision == quant.F16:
			it.Record.Precision = d.Precision.String()
			it.Outputs = []safetensors.Spec{{Name: in.Name, DType: safetensors.F16, Shape: in.Shape}}
		case d.Precision.Quantized():
			cols := in.Shape[len(in.Shape)-1]
			rows := in.NumElements() / max(cols, 1)
			tg := g
			if d.GroupSize != 0 {
				tg = d.GroupSize
				if tg < 1 || tg > quant.MaxGroupSize {
					return nil, fmt.Errorf("tensor %q: policy chose impossible group size %d (want 1..%d)", in.Name, tg, quant.MaxGroupSize)
				}
				groups[tg]++
			} else {
				groups[g]++
			}
			l := quant.Layout{Rows: int(rows), Cols: int(cols), GroupSize: tg, Precision: d.Precision}
			if err := l.Validate(); err != nil {
				return nil, quant.InputError(&quant.TensorError{Tensor: in.Name, Err: err})
			}
			it.Layout = l
			it.Record.Precision = d.Precision.String()
			it.Record.GroupSize = tg
			dt := safetensors.I8
			if d.Precision == quant.INT4 {
				dt = safetensors.U8
			}
			it.Outputs = []safetensors.Spec{
				{Name: in.Name + QWeight, DType: dt, Shape: []int64{rows, int64(l.RowBytes())}},
				{Name: in.Name + Scales, DType: safetensors.F16, Shape: []int64{rows, int64(l.GroupsPerRow())}},
			}
		default:
			return nil, fmt.Errorf("tensor %q: policy chose invalid precision %v", in.Name, d.Precision)
		}
		rec, err := json.Marshal(it.Record)
		if err != nil {
			return nil, err
		}
		// Output names must not collide: an input named "W.scales" next to
		// a quantized "W" would make the file ambiguous.
		for _, o := range it.Outputs {
			if prev, dup := owner[o.Name]; dup {
				return nil, quant.InputError(&quant.TensorError{Tensor: in.Name, Err: fmt.Errorf(
					"its output %q collides with the output of tensor %q; rename one, or keep %q unquantized with a rule", o.Name, prev, in.Name)})
			}
			owner[o.Name] = in.Name
		}
		// The record sits with the first output tensor, so it lands in the
		// same shard as the data it describes.
		recs[it.Outputs[0].Name] = string(rec)
		keys[it.Outputs[0].Name] = RecordPrefix + in.Name
		counts[it.Record.Precision]++
		specs = append(specs, it.Outputs...)
		p.Items = append(p.Items, it)
	}
	cfg, err := quantizedConfig(opt.Config, g, opt.PolicyName, counts, groups)
	if err != nil {
		return nil, err
	}
	l, err := shards.Plan(specs, shards.Options{
		MaxShardSize:   opt.MaxShardSize,
		Config:         cfg,
		Metadata:       map[string]string{FormatKey: Format, "format": "pt"},
		TensorMetadata: recs,
		MetadataKey:    func(out string) string { return keys[out] },
	})
	if err != nil {
		return nil, err
	}
	p.Layout = l
	return p, nil
}

// QuantizedConfig returns the input config.json with a quantization_config
// block added (or an object holding only that block when there is no input
// config). Numbers are kept as written, keys are sorted, so the output is
// deterministic.
func QuantizedConfig(config []byte, groupSize int, policyName string, counts map[string]int) ([]byte, error) {
	return quantizedConfig(config, groupSize, policyName, counts, nil)
}

// quantizedConfig is QuantizedConfig that also records, when the quantized
// tensors do not all use groupSize, how many use each group size
// ("group_sizes"); every tensor's own group size is in its record.
func quantizedConfig(config []byte, groupSize int, policyName string, counts map[string]int, groups map[int]int) ([]byte, error) {
	if policyName == "" {
		policyName = "static"
	}
	mixed := len(groups) > 1 || (len(groups) == 1 && groups[groupSize] == 0)
	return EditConfig(config, func(obj map[string]any) {
		qc := map[string]any{
			"quant_method":      "mixq",
			"format":            Format,
			"group_size":        groupSize,
			"scheme":            "symmetric group-wise absmax, f16 scales",
			"int4_packing":      "two per byte, even column in the low nibble",
			"policy":            policyName,
			"tensor_precisions": counts,
		}
		if mixed {
			gs := map[string]int{}
			for g, n := range groups {
				gs[strconv.Itoa(g)] = n
			}
			qc["group_sizes"] = gs
		}
		obj["quantization_config"] = qc
	})
}

// DequantizedConfig strips quantization_config from a config.json and sets
// torch_dtype to the dtype a dequantized output holds ("float32", ...), so
// that transformers loads the weights as they are stored. An empty config
// stays empty (nil).
func DequantizedConfig(config []byte, torchDType string) ([]byte, error) {
	if len(bytes.TrimSpace(config)) == 0 {
		return nil, nil
	}
	return EditConfig(config, func(obj map[string]any) {
		delete(obj, "quantization_config")
		obj["torch_dtype"] = torchDType
	})
}

// EditConfig decodes a config.json object (an empty object when config is
// empty), applies edit and renders the result with sorted keys and numbers
// kept as written, so that every output's config is deterministic. A
// config that is not a JSON object is an input error.
func EditConfig(config []byte, edit func(obj map[string]any)) ([]byte, error) {
	obj := map[string]any{}
	if len(bytes.TrimSpace(config)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(config))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return nil, quant.InputError(fmt.Errorf("config.json: %v", err))
		}
	}
	edit(obj)
	b, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// sortedKeys returns map keys in order.
func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
