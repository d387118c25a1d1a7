package quant

import (
	"fmt"
	"strings"
)

// Precision is the storage precision chosen for one tensor.
type Precision uint8

const (
	// F32 stores the tensor as IEEE binary32.
	F32 Precision = iota + 1
	// F16 stores the tensor as IEEE binary16, rounded to nearest even.
	F16
	// INT8 stores signed 8-bit codes in [-127, 127] with one F16 scale per group.
	INT8
	// INT4 stores signed 4-bit codes in [-7, 7], two per byte, with one F16 scale per group.
	INT4
)

// Precisions lists every precision, from the widest to the narrowest.
var Precisions = []Precision{F32, F16, INT8, INT4}

// String returns the lower-case name used on the command line and in files.
func (p Precision) String() string {
	switch p {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case INT8:
		return "int8"
	case INT4:
		return "int4"
	}
	return fmt.Sprintf("precision(%d)", uint8(p))
}

// ParsePrecision accepts the names String returns, case-insensitively,
// plus the common spellings fp32, fp16, float32, float16, i8, q8, i4 and q4.
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "f32", "fp32", "float32":
		return F32, nil
	case "f16", "fp16", "float16", "half":
		return F16, nil
	case "int8", "i8", "q8":
		return INT8, nil
	case "int4", "i4", "q4":
		return INT4, nil
	}
	return 0, fmt.Errorf("unknown precision %q (want f32, f16, int8 or int4)", s)
}

// Valid reports whether p is one of the four precisions.
func (p Precision) Valid() bool { return p >= F32 && p <= INT4 }

// Quantized reports whether p is an integer format with group scales.
func (p Precision) Quantized() bool { return p == INT8 || p == INT4 }

// QMax is the largest code magnitude: codes lie in [-QMax, QMax].
// The range is symmetric, so -128 and -8 are never produced.
func (p Precision) QMax() int {
	switch p {
	case INT8:
		return 127
	case INT4:
		return 7
	}
	return 0
}

// Bits is the storage width of one element, scales excluded.
func (p Precision) Bits() int {
	switch p {
	case F32:
		return 32
	case F16:
		return 16
	case INT8:
		return 8
	case INT4:
		return 4
	}
	return 0
}

// MarshalText makes precisions read and write as their names in JSON.
func (p Precision) MarshalText() ([]byte, error) {
	if !p.Valid() {
		return nil, fmt.Errorf("invalid precision %d", uint8(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText parses the names accepted by ParsePrecision.
func (p *Precision) UnmarshalText(b []byte) error {
	v, err := ParsePrecision(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
