package safetensors

// DType is the element type of a tensor, spelled as in the header's "dtype"
// field.
type DType string

// The element types of the safetensors format. All are little-endian.
const (
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	F64    DType = "F64"
	I8     DType = "I8"
	U8     DType = "U8"
	I16    DType = "I16"
	U16    DType = "U16"
	I32    DType = "I32"
	U32    DType = "U32"
	I64    DType = "I64"
	U64    DType = "U64"
	BOOL   DType = "BOOL"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
)

// Size is the number of bytes per element, or 0 for a dtype this package
// does not know. A zero size is how the rest of the package tells a known
// dtype from an unknown one, so there is no separate validity check.
func (d DType) Size() int {
	switch d {
	case BOOL, U8, I8, F8E4M3, F8E5M2:
		return 1
	case F16, BF16, I16, U16:
		return 2
	case F32, I32, U32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// numBytes is numel × d.Size() for shape, or ok == false when a dimension
// is negative, the dtype is unknown, or the product overflows int64. It is
// the one place sizes are computed, for the reader and the writer alike.
func numBytes(d DType, shape []int64) (numel, bytes int64, err error) {
	size := int64(d.Size())
	if size == 0 {
		return 0, 0, errUnknownDType
	}
	numel = 1
	for _, dim := range shape {
		if dim < 0 {
			return 0, 0, errNegativeDim
		}
	}
	// Checked only after every dim is known non-negative, and with a zero
	// dimension anywhere the product is 0 however large the others are.
	for _, dim := range shape {
		if dim == 0 {
			return 0, 0, nil
		}
	}
	const maxInt64 = 1<<63 - 1
	for _, dim := range shape {
		if numel > maxInt64/dim {
			return 0, 0, errOverflow
		}
		numel *= dim
	}
	if numel > maxInt64/size {
		return 0, 0, errOverflow
	}
	return numel, numel * size, nil
}
