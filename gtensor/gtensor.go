package gtensor

import (
	"fmt"

	"gorgonia.org/tensor"

	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
)

// Dense wraps data as a tensor of the given shape, sharing its memory:
// writes through either are seen by both.
func Dense(data []float32, shape ...int) (*tensor.Dense, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", shape)
		}
		n *= d
	}
	if n != len(data) {
		return nil, fmt.Errorf("shape %v needs %d elements, data has %d", shape, n, len(data))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data)), nil
}

// Float32s returns the backing slice of a float32 tensor (no copy) and its
// shape. Views and non-contiguous tensors are refused (transposes included, which gorgonia applies lazily), because their
// backing is not the tensor's row-major content.
func Float32s(t *tensor.Dense) ([]float32, []int, error) {
	if t.Dtype() != tensor.Float32 {
		return nil, nil, fmt.Errorf("tensor has dtype %v, want float32", t.Dtype())
	}
	if t.IsView() || t.IsMaterializable() || t.RequiresIterator() || !t.DataOrder().IsRowMajor() {
		return nil, nil, fmt.Errorf("tensor is a view or not row-major; materialize it first")
	}
	return t.Float32s(), []int(t.Shape().Clone()), nil
}

// Load reads one original tensor of a quantized checkpoint as a Dense
// float32 tensor, dequantizing through the backend.
func Load(m *qformat.Model, name string, b quant.Backend) (*tensor.Dense, error) {
	e, ok := m.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	data := make([]float32, e.NumElements())
	if err := m.Float32(e, data, b); err != nil {
		return nil, err
	}
	shape := make([]int, len(e.Record.Shape))
	for i, d := range e.Record.Shape {
		shape[i] = int(d)
	}
	if len(shape) == 0 {
		shape = []int{1} // tensor.Dense has no rank-0 float backing
	}
	return Dense(data, shape...)
}

// Quantize quantizes a 2-D (or higher) float32 tensor along its last axis,
// returning the packed codes, the scales and the layout.
func Quantize(b quant.Backend, t *tensor.Dense, groupSize int, p quant.Precision) ([]byte, []uint16, quant.Layout, error) {
	data, shape, err := Float32s(t)
	if err != nil {
		return nil, nil, quant.Layout{}, err
	}
	if len(shape) < 2 {
		return nil, nil, quant.Layout{}, fmt.Errorf("quantizing needs rank ≥ 2, got shape %v", shape)
	}
	cols := shape[len(shape)-1]
	l := quant.Layout{Rows: len(data) / max(cols, 1), Cols: cols, GroupSize: groupSize, Precision: p}
	if err := l.Validate(); err != nil {
		return nil, nil, l, err
	}
	scales := make([]uint16, l.NumScales())
	packed := make([]byte, l.PackedBytes())
	if err := b.GroupScales(scales, data, l); err != nil {
		return nil, nil, l, err
	}
	if err := b.Quantize(packed, data, scales, l); err != nil {
		return nil, nil, l, err
	}
	return packed, scales, l, nil
}
