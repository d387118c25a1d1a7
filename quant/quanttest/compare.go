package quanttest

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/mixq/mixq/quant"
	"github.com/x448/float16"
)

// Element is a type RequireEqualBits compares by bit pattern.
type Element interface {
	float32 | float64 | uint16 | uint8 | int64
}

// RequireEqualBits fails t unless got and want have the same length and the
// same bits at every index. The message names the first differing index,
// both values (with their bit patterns) and how many elements differ.
func RequireEqualBits[E Element](t testing.TB, what string, got, want []E) {
	t.Helper()
	if msg := DiffBits(got, want); msg != "" {
		t.Fatalf("%s: %s", what, msg)
	}
}

// DiffBits describes the first difference between got and want, or returns
// "" when they are bitwise equal.
func DiffBits[E Element](got, want []E) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	first, count := -1, 0
	for i := range got {
		if bitsOf(got[i]) != bitsOf(want[i]) {
			if first < 0 {
				first = i
			}
			count++
		}
	}
	if first < 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d elements differ; first at index %d: got %s, want %s",
		count, len(got), first, format(got[first]), format(want[first]))
}

func bitsOf[E Element](v E) uint64 {
	switch x := any(v).(type) {
	case float32:
		return uint64(math.Float32bits(x))
	case float64:
		return math.Float64bits(x)
	case uint16:
		return uint64(x)
	case uint8:
		return uint64(x)
	case int64:
		return uint64(x)
	}
	panic("unreachable")
}

func format[E Element](v E) string {
	switch x := any(v).(type) {
	case float32:
		return fmt.Sprintf("%g (0x%08x)", x, math.Float32bits(x))
	case float64:
		return fmt.Sprintf("%g (0x%016x)", x, math.Float64bits(x))
	case uint16:
		return fmt.Sprintf("0x%04x (f16 %g)", x, float16.Frombits(x).Float32())
	case uint8:
		return fmt.Sprintf("0x%02x", x)
	case int64:
		return fmt.Sprint(x)
	}
	panic("unreachable")
}

// Guard patterns. Outputs are surrounded by guardLen elements of the guard
// pattern, and their inside is pre-filled with the "test" pattern for the
// backend under test and the "ref" pattern for the reference.
const guardLen = 17

const (
	guardBits32 = 0x7fa5a5a5 // a signalling NaN: never produced by arithmetic
	testBits32  = 0xffb1b1b1
	refBits32   = 0x7fc3c3c3
	guardBits64 = 0x7ff5a5a5a5a5a5a5
	testBits64  = 0xfff1b1b1b1b1b1b1
	refBits64   = 0x7ff3c3c3c3c3c3c3
	guardBits16 = 0xa5a5
	testBits16  = 0xb1b1
	refBits16   = 0xc3c3
	guardBits8  = 0xa5
	testBits8   = 0xb1
	refBits8    = 0xc3
)

// Guarded is an output buffer with guard elements on both sides.
type Guarded[E Element] struct {
	all   []E
	guard E
	// In is the buffer to pass to a kernel: len(In) is the requested size.
	In []E
}

// NewGuarded allocates n elements with guards, the inside filled with fill
// and the guards with guard.
func NewGuarded[E Element](n int, fill, guard E) *Guarded[E] {
	all := make([]E, n+2*guardLen)
	for i := range all {
		all[i] = guard
	}
	in := all[guardLen : guardLen+n : guardLen+n]
	for i := range in {
		in[i] = fill
	}
	return &Guarded[E]{all: all, guard: guard, In: in}
}

// Check fails t if a guard element was overwritten.
func (g *Guarded[E]) Check(t testing.TB, what string) {
	t.Helper()
	n := len(g.In)
	for i, v := range g.all {
		if i >= guardLen && i < guardLen+n {
			continue
		}
		if bitsOf(v) != bitsOf(g.guard) {
			t.Fatalf("%s: guard overwritten at offset %d from the buffer start (length %d): %s", what, i-guardLen, n, format(v))
		}
	}
}

// Output buffers pre-filled for the backend under test and for the reference.
func testF32(n int) *Guarded[float32] {
	return NewGuarded(n, math.Float32frombits(testBits32), math.Float32frombits(guardBits32))
}
func refF32(n int) *Guarded[float32] {
	return NewGuarded(n, math.Float32frombits(refBits32), math.Float32frombits(guardBits32))
}
func testF64(n int) *Guarded[float64] {
	return NewGuarded(n, math.Float64frombits(testBits64), math.Float64frombits(guardBits64))
}
func testU16(n int) *Guarded[uint16] { return NewGuarded[uint16](n, testBits16, guardBits16) }
func refU16(n int) *Guarded[uint16]  { return NewGuarded[uint16](n, refBits16, guardBits16) }
func testU8(n int) *Guarded[uint8]   { return NewGuarded[uint8](n, testBits8, guardBits8) }
func refU8(n int) *Guarded[uint8]    { return NewGuarded[uint8](n, refBits8, guardBits8) }

// call runs a kernel, turning a panic into a test failure.
func call(t testing.TB, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	}()
	return f()
}

// RequireSameError fails t unless got and want are both nil, or both
// non-nil with the same kind: a *quant.NonFiniteError with the same Index and
// Value bits, a *quant.ScaleOverflowError with the same Row, Group and
// AbsMax bits, or any other error.
func RequireSameError(t testing.TB, what string, got, want error) {
	t.Helper()
	if msg := diffError(got, want); msg != "" {
		t.Fatalf("%s: %s", what, msg)
	}
}

func diffError(got, want error) string {
	switch {
	case got == nil && want == nil:
		return ""
	case want == nil:
		return fmt.Sprintf("unexpected error: %v", got)
	case got == nil:
		return fmt.Sprintf("no error, want %v", want)
	}
	var wn, gn *quant.NonFiniteError
	if errors.As(want, &wn) {
		if !errors.As(got, &gn) {
			return fmt.Sprintf("error %v, want %v", got, want)
		}
		if gn.Index != wn.Index || math.Float32bits(gn.Value) != math.Float32bits(wn.Value) {
			return fmt.Sprintf("non-finite at index %d value 0x%08x, want index %d value 0x%08x",
				gn.Index, math.Float32bits(gn.Value), wn.Index, math.Float32bits(wn.Value))
		}
		return ""
	}
	var wo, gm *quant.ScaleOverflowError
	if errors.As(want, &wo) {
		if !errors.As(got, &gm) {
			return fmt.Sprintf("error %v, want %v", got, want)
		}
		if gm.Row != wo.Row || gm.Group != wo.Group || math.Float32bits(gm.AbsMax) != math.Float32bits(wo.AbsMax) {
			return fmt.Sprintf("scale overflow at row %d group %d absmax %g, want row %d group %d absmax %g",
				gm.Row, gm.Group, gm.AbsMax, wo.Row, wo.Group, wo.AbsMax)
		}
		return ""
	}
	if errors.As(got, &gn) || errors.As(got, &gm) {
		return fmt.Sprintf("error %v, want %v", got, want)
	}
	return ""
}
