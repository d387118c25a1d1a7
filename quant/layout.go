package quant

import (
	"errors"
	"fmt"
)

// DefaultGroupSize is the number of consecutive elements of a row that share one scale.
const DefaultGroupSize = 128

// MaxGroupSize bounds the group size. Larger groups would make the per-group
// partial sums of MatMul long enough to lose precision for no size benefit
// worth having (the scale overhead at 4096 is already under 0.4%).
const MaxGroupSize = 4096

// Layout describes a row-major matrix of Rows × Cols weights quantized in
// groups of GroupSize consecutive elements along each row. A tensor of any
// rank is viewed as a matrix whose Cols is its last dimension.
type Layout struct {
	Rows, Cols int
	GroupSize  int
	Precision  Precision
}

// Validate reports an impossible layout: non-positive sizes, a group size
// that is zero, negative or larger than MaxGroupSize, or a precision that
// is not INT8 or INT4.
func (l Layout) Validate() error {
	switch {
	case !l.Precision.Quantized():
		return fmt.Errorf("layout precision %v is not a quantized precision", l.Precision)
	case l.Rows <= 0 || l.Cols <= 0:
		return fmt.Errorf("layout %d×%d has an empty dimension", l.Rows, l.Cols)
	case l.GroupSize <= 0:
		return fmt.Errorf("group size %d must be positive", l.GroupSize)
	case l.GroupSize > MaxGroupSize:
		return fmt.Errorf("group size %d exceeds the maximum %d", l.GroupSize, MaxGroupSize)
	case int64(l.Rows)*int64(l.Cols) > 1<<40:
		return errors.New("layout has more than 2^40 elements")
	}
	return nil
}

// GroupsPerRow is ceil(Cols / GroupSize). The last group of a row is
// shorter when Cols is not a multiple of GroupSize.
func (l Layout) GroupsPerRow() int { return (l.Cols + l.GroupSize - 1) / l.GroupSize }

// NumScales is the number of F16 scales: Rows × GroupsPerRow, row-major.
func (l Layout) NumScales() int { return l.Rows * l.GroupsPerRow() }

// RowBytes is the packed size of one row. INT4 rows are padded to a whole
// byte, so every row starts on a byte boundary.
func (l Layout) RowBytes() int {
	if l.Precision == INT4 {
		return (l.Cols + 1) / 2
	}
	return l.Cols
}

// PackedBytes is the size of the packed code array.
func (l Layout) PackedBytes() int { return l.Rows * l.RowBytes() }

// Elements is Rows × Cols.
func (l Layout) Elements() int { return l.Rows * l.Cols }

// Group returns the column range [lo, hi) of group g.
func (l Layout) Group(g int) (lo, hi int) {
	lo = g * l.GroupSize
	hi = min(lo+l.GroupSize, l.Cols)
	return lo, hi
}

// CheckBuffers verifies buffer lengths against the layout, so that a
// backend never indexes out of range and a device launch cannot fault. A nil
// argument means "not involved" and is skipped: a backend must pass a
// non-nil (possibly empty) slice for every buffer its operation uses.
func (l Layout) CheckBuffers(w []float32, packed []byte, scales []uint16) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if w != nil && len(w) != l.Elements() {
		return fmt.Errorf("weights have %d elements, layout %d×%d needs %d", len(w), l.Rows, l.Cols, l.Elements())
	}
	if packed != nil && len(packed) != l.PackedBytes() {
		return fmt.Errorf("packed buffer has %d bytes, layout needs %d", len(packed), l.PackedBytes())
	}
	if scales != nil && len(scales) != l.NumScales() {
		return fmt.Errorf("scale buffer has %d entries, layout needs %d", len(scales), l.NumScales())
	}
	return nil
}

// CheckMatMul verifies the activations and outputs of a MatMul with m rows of
// x against the layout of W: x is [m, Cols] and y is [m, Rows]. Backends
// call it (and CheckBuffers for the codes and scales) so that all of them
// refuse the same calls with the same words.
func (l Layout) CheckMatMul(y, x []float32, m int) error {
	switch {
	case m < 1:
		return fmt.Errorf("matmul: m = %d, want at least 1", m)
	case len(x)%l.Cols != 0 || len(x)/l.Cols != m:
		return fmt.Errorf("matmul: x has %d elements, want m×Cols = %d×%d", len(x), m, l.Cols)
	case len(y)%l.Rows != 0 || len(y)/l.Rows != m:
		return fmt.Errorf("matmul: y has %d elements, want m×Rows = %d×%d", len(y), m, l.Rows)
	}
	return nil
}
