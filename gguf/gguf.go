package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// Version is the GGUF version written.
const Version = 3

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// AlignmentKey overrides the alignment.
const AlignmentKey = "general.alignment"

// ValueType is the type tag of a metadata value.
type ValueType uint32

// The metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

// GGMLType is a tensor's element or block type.
type GGMLType uint32

// The ggml types this package writes and reads.
const (
	F32  GGMLType = 0
	F16  GGMLType = 1
	Q4_0 GGMLType = 2
	Q8_0 GGMLType = 8
	BF16 GGMLType = 30
)

// QK is the number of elements in a Q4_0 or Q8_0 block.
const QK = 32

func (t GGMLType) String() string {
	switch t {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case Q4_0:
		return "Q4_0"
	case Q8_0:
		return "Q8_0"
	case BF16:
		return "BF16"
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// blockSize returns elements per block and bytes per block, ok false for
// a type this package does not know.
func (t GGMLType) blockSize() (elems, bytes int64, ok bool) {
	switch t {
	case F32:
		return 1, 4, true
	case F16, BF16:
		return 1, 2, true
	case Q4_0:
		return QK, 2 + QK/2, true
	case Q8_0:
		return QK, 2 + QK, true
	}
	return 0, 0, false
}

// RowBytes is the size of a row of n elements, an error when n is not a
// whole number of blocks.
func (t GGMLType) RowBytes(n int64) (int64, error) {
	be, bb, ok := t.blockSize()
	if !ok {
		return 0, fmt.Errorf("unknown ggml type %d", uint32(t))
	}
	if n%be != 0 {
		return 0, fmt.Errorf("%s needs rows that are a multiple of %d elements, got %d", t, be, n)
	}
	return n / be * bb, nil
}

// KV is one metadata entry. Value is one of uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64, or a slice
// of one of those ([]string, []float32, []int32, ...).
type KV struct {
	Key   string
	Value any
}

// TensorInfo describes one tensor. Dims are in ggml order: Dims[0] is the
// row length (the last dimension of the PyTorch shape).
type TensorInfo struct {
	Name string
	Dims []uint64
	Type GGMLType
	// Offset is relative to the start of the data section; set by NewLayout.
	Offset uint64
}

// NumElements is the product of the dimensions, -1 when it overflows.
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		if d > math.MaxInt64 || (d > 0 && n > math.MaxInt64/int64(d)) {
			return -1
		}
		n *= int64(d)
	}
	return n
}

// Bytes is the tensor's data size.
func (t TensorInfo) Bytes() (int64, error) {
	if len(t.Dims) == 0 {
		return t.Type.RowBytes(1)
	}
	n := t.NumElements()
	if n < 0 || n > math.MaxInt64/4 {
		return 0, fmt.Errorf("tensor %q: dimensions %v overflow", t.Name, t.Dims)
	}
	rb, err := t.Type.RowBytes(int64(t.Dims[0]))
	if err != nil {
		return 0, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	// At most 4 bytes per element: no overflow below MaxInt64/4 elements.
	return rb * (n / max(int64(t.Dims[0]), 1)), nil
}

// Layout is a complete file description: metadata, tensors with their
// offsets, and the sizes that follow.
type Layout struct {
	KVs     []KV
	Tensors []TensorInfo
	// Alignment of the data section and of every tensor in it.
	Alignment int64
	// DataOffset is where the data section starts (the padded header size).
	DataOffset int64
	// Size is the file size in bytes.
	Size     int64
	header   []byte
	index    map[string]int
	tensorSz []int64
}

// NewLayout places the tensors in the given order and computes the file's
// exact size. Keys and tensor names must be unique.
func NewLayout(kvs []KV, tensors []TensorInfo) (*Layout, error) {
	l := &Layout{KVs: kvs, Tensors: append([]TensorInfo(nil), tensors...), Alignment: DefaultAlignment, index: map[string]int{}}
	seen := map[string]bool{}
	for _, kv := range kvs {
		if seen[kv.Key] {
			return nil, fmt.Errorf("gguf: metadata key %q given twice", kv.Key)
		}
		seen[kv.Key] = true
		if kv.Key == AlignmentKey {
			a, ok := kv.Value.(uint32)
			if !ok || a == 0 || a%8 != 0 {
				return nil, fmt.Errorf("gguf: %s must be a uint32 multiple of 8, got %v", AlignmentKey, kv.Value)
			}
			l.Alignment = int64(a)
		}
	}
	var off int64
	for i := range l.Tensors {
		t := &l.Tensors[i]
		if _, dup := l.index[t.Name]; dup {
			return nil, fmt.Errorf("gguf: tensor %q given twice", t.Name)
		}
		l.index[t.Name] = i
		n, err := t.Bytes()
		if err != nil {
			return nil, err
		}
		t.Offset = uint64(off)
		l.tensorSz = append(l.tensorSz, n)
		off = l.align(off + n)
	}
	h, err := encodeHeader(l.KVs, l.Tensors)
	if err != nil {
		return nil, err
	}
	l.DataOffset = l.align(int64(len(h)))
	l.header = append(h, make([]byte, l.DataOffset-int64(len(h)))...)
	l.Size = l.DataOffset + off
	return l, nil
}

func (l *Layout) align(n int64) int64 { return (n + l.Alignment - 1) / l.Alignment * l.Alignment }

// TensorBytes is the data size of tensor i.
func (l *Layout) TensorBytes(i int) int64 { return l.tensorSz[i] }

// Header returns the encoded header, padded to DataOffset.
func (l *Layout) Header() []byte { return l.header }

func encodeHeader(kvs []KV, tensors []TensorInfo) ([]byte, error) {
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	le(uint32(Magic))
	le(uint32(Version))
	le(uint64(len(tensors)))
	le(uint64(len(kvs)))
	for _, kv := range kvs {
		writeString(&b, kv.Key)
		if err := writeValue(&b, kv.Value, true); err != nil {
			return nil, fmt.Errorf("gguf: key %q: %w", kv.Key, err)
		}
	}
	for _, t := range tensors {
		writeString(&b, t.Name)
		le(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			le(d)
		}
		le(uint32(t.Type))
		le(t.Offset)
	}
	return b.Bytes(), nil
}

func writeString(b *bytes.Buffer, s string) {
	_ = binary.Write(b, binary.LittleEndian, uint64(len(s)))
	b.WriteString(s)
}

// writeValue writes the type tag (when tagged) and the value.
func writeValue(b *bytes.Buffer, v any, tagged bool) error {
	tag := func(t ValueType) {
		if tagged {
			_ = binary.Write(b, binary.LittleEndian, uint32(t))
		}
	}
	le := func(x any) { _ = binary.Write(b, binary.LittleEndian, x) }
	switch x := v.(type) {
	case uint8:
		tag(TypeUint8)
		le(x)
	case int8:
		tag(TypeInt8)
		le(x)
	case uint16:
		tag(TypeUint16)
		le(x)
	case int16:
		tag(TypeInt16)
		le(x)
	case uint32:
		tag(TypeUint32)
		le(x)
	case int32:
		tag(TypeInt32)
		le(x)
	case float32:
		tag(TypeFloat32)
		le(x)
	case bool:
		tag(TypeBool)
		if x {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
	case string:
		tag(TypeString)
		writeString(b, x)
	case uint64:
		tag(TypeUint64)
		le(x)
	case int64:
		tag(TypeInt64)
		le(x)
	case float64:
		tag(TypeFloat64)
		le(x)
	case []string:
		tag(TypeArray)
		le(uint32(TypeString))
		le(uint64(len(x)))
		for _, s := range x {
			writeString(b, s)
		}
	case []float32:
		writeArray(b, tagged, TypeFloat32, x)
	case []int32:
		writeArray(b, tagged, TypeInt32, x)
	case []uint32:
		writeArray(b, tagged, TypeUint32, x)
	case []uint8:
		writeArray(b, tagged, TypeUint8, x)
	case []int64:
		writeArray(b, tagged, TypeInt64, x)
	case []float64:
		writeArray(b, tagged, TypeFloat64, x)
	case []bool:
		if tagged {
			le(uint32(TypeArray))
		}
		le(uint32(TypeBool))
		le(uint64(len(x)))
		for _, e := range x {
			writeValue(b, e, false)
		}
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}

func writeArray[T any](b *bytes.Buffer, tagged bool, t ValueType, x []T) {
	if tagged {
		_ = binary.Write(b, binary.LittleEndian, uint32(TypeArray))
	}
	_ = binary.Write(b, binary.LittleEndian, uint32(t))
	_ = binary.Write(b, binary.LittleEndian, uint64(len(x)))
	_ = binary.Write(b, binary.LittleEndian, x)
}

// PutQ8_0 writes one Q8_0 block: the f16 scale d and 32 codes.
func PutQ8_0(dst []byte, d uint16, codes []int8) {
	_ = dst[2+QK-1]
	binary.LittleEndian.PutUint16(dst, d)
	for i, q := range codes[:QK] {
		dst[2+i] = byte(q)
	}
}

// PutQ4_0 writes one Q4_0 block from 32 codes in [-8, 7]: byte i holds
// codes[i]+8 in its low nibble and codes[i+16]+8 in its high nibble.
func PutQ4_0(dst []byte, d uint16, codes []int8) {
	_ = dst[2+QK/2-1]
	_ = codes[QK-1]
	binary.LittleEndian.PutUint16(dst, d)
	for i := 0; i < QK/2; i++ {
		lo := byte(codes[i]+8) & 0x0f
		hi := byte(codes[i+QK/2]+8) & 0x0f
		dst[2+i] = lo | hi<<4
	}
}
