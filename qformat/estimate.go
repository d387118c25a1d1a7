package qformat

import (
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
)

// DefaultTarget is the seed design's compression goal versus FP32.
const DefaultTarget = 6.0

// Breakdown sums the tensors of one precision or one component.
type Breakdown struct {
	Name       string  `json:"name"`
	Tensors    int     `json:"tensors"`
	Parameters int64   `json:"parameters"`
	FP32Bytes  int64   `json:"fp32_bytes"`
	Bytes      int64   `json:"bytes"`
	BitsPerW   float64 `json:"bits_per_weight"`
}

// Estimate is the size report of a plan, computed from headers alone.
type Estimate struct {
	TotalParameters     int64   `json:"total_parameters"`
	FP32Bytes           int64   `json:"fp32_bytes"`
	MixedPrecisionBytes int64   `json:"mixed_precision_bytes"`
	CompressionRatio    float64 `json:"compression_ratio"`
	TargetCompression   float64 `json:"target_compression"`
	MeetsTarget         bool    `json:"meets_target"`
	// BitsPerWeight is MixedPrecisionBytes·8 / TotalParameters.
	BitsPerWeight float64 `json:"bits_per_weight"`
	// TensorBytes is the data of all output tensors (codes, scales, kept
	// and float tensors); OverheadBytes is everything else that is written:
	// safetensors headers with their metadata, the shard index, config.json.
	TensorBytes   int64 `json:"tensor_bytes"`
	OverheadBytes int64 `json:"overhead_bytes"`
	// CarriedBytes are the input's non-weight files copied along (the
	// tokenizer, generation_config.json, ...), with their lines in the
	// marker's manifest (shards.Layout.CarriedBytes). They are in
	// MixedPrecisionBytes, which is what the disk will hold, but not in
	// CompressionRatio or BitsPerWeight, which measure the weights: FP32
	// has the same tokenizer.
	CarriedBytes int64       `json:"carried_bytes"`
	GroupSize    int         `json:"group_size"`
	Files        []FileSize  `json:"files"`
	ByPrecision  []Breakdown `json:"by_precision"`
	ByComponent  []Breakdown `json:"by_component"`
}

// FileSize is one planned file.
type FileSize struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// Estimate summarises the plan. mixed_precision_bytes is the exact size of
// every file the quantizer writes, so it can be checked against the disk.
func (p *Plan) Estimate(target float64) *Estimate {
	if target <= 0 {
		target = DefaultTarget
	}
	e := &Estimate{TargetCompression: target, GroupSize: p.GroupSize}
	byPrec := map[string]*Breakdown{}
	byComp := map[string]*Breakdown{}
	add := func(m map[string]*Breakdown, key string, params, bytes int64) {
		b := m[key]
		if b == nil {
			b = &Breakdown{Name: key}
			m[key] = b
		}
		b.Tensors++
		b.Parameters += params
		b.FP32Bytes += 4 * params
		b.Bytes += bytes
	}
	for i := range p.Items {
		it := &p.Items[i]
		n := it.Input.NumElements()
		b := it.Bytes()
		e.TotalParameters += n
		e.TensorBytes += b
		add(byPrec, it.Record.Precision, n, b)
		add(byComp, string(it.Decision.Component), n, b)
	}
	e.FP32Bytes = 4 * e.TotalParameters
	e.MixedPrecisionBytes = p.Layout.TotalBytes()
	e.CarriedBytes = p.Layout.CarriedBytes()
	model := e.MixedPrecisionBytes - e.CarriedBytes
	e.OverheadBytes = model - e.TensorBytes
	if model > 0 {
		e.CompressionRatio = float64(e.FP32Bytes) / float64(model)
	}
	if e.TotalParameters > 0 {
		e.BitsPerWeight = float64(8*model) / float64(e.TotalParameters)
	}
	e.MeetsTarget = e.CompressionRatio >= target
	for _, s := range p.Layout.Shards {
		e.Files = append(e.Files, FileSize{s.File, s.Size})
	}
	if p.Layout.Index != nil {
		e.Files = append(e.Files, FileSize{"model.safetensors.index.json", int64(len(p.Layout.Index))})
	}
	if p.Layout.Config != nil {
		e.Files = append(e.Files, FileSize{"config.json", int64(len(p.Layout.Config))})
	}
	for _, x := range p.Layout.Extra {
		e.Files = append(e.Files, FileSize{x.Name, x.Size})
	}
	e.Files = append(e.Files, FileSize{safeout.MarkerName, p.Layout.MarkerBytes()})
	order := []string{}
	for _, q := range quant.Precisions {
		order = append(order, q.String())
	}
	order = append(order, Keep)
	e.ByPrecision = collect(byPrec, order)
	var comps []string
	for _, c := range policy.Components {
		comps = append(comps, string(c))
	}
	e.ByComponent = collect(byComp, comps)
	return e
}

func collect(m map[string]*Breakdown, order []string) []Breakdown {
	var out []Breakdown
	seen := map[string]bool{}
	emit := func(k string) {
		if b, ok := m[k]; ok && !seen[k] {
			seen[k] = true
			if b.Parameters > 0 {
				b.BitsPerW = float64(8*b.Bytes) / float64(b.Parameters)
			}
			out = append(out, *b)
		}
	}
	for _, k := range order {
		emit(k)
	}
	for _, k := range sortedKeys(m) {
		emit(k)
	}
	return out
}
