package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/mixq/mixq/internal/infile"
)

// File is an opened GGUF file: its metadata and tensor descriptors.
type File struct {
	Path       string
	Version    uint32
	KVs        []KV
	Tensors    []TensorInfo
	Alignment  int64
	DataOffset int64
	Size       int64
	f          *os.File
}

// maxString and maxArray bound lengths read from a file, so a corrupt
// header fails instead of allocating without limit.
const (
	maxString = 1 << 30
	maxArray  = 1 << 28
)

// Open reads the header of a GGUF file. Errors name the file.
func Open(path string) (*File, error) {
	// infile.Open refuses a FIFO or device (which would block or never end).
	f, st, err := infile.Open(path)
	if err != nil {
		return nil, err
	}
	g := &File{Path: path, f: f, Size: st.Size(), Alignment: DefaultAlignment}
	cr := &countReader{r: bufio.NewReaderSize(f, 1<<16), size: st.Size()}
	if err := g.readHeader(cr); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

type countReader struct {
	r    io.Reader
	n    int64
	size int64
}

// fits reports whether n items of at least each bytes can still be in the
// file, so that a corrupt length fails before it is allocated.
func fits(r io.Reader, n uint64, each uint64) bool {
	c, ok := r.(*countReader)
	if !ok {
		return true
	}
	left := uint64(max(c.size-c.n, 0))
	return n <= left/max(each, 1)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (g *File) readHeader(r *countReader) error {
	var hdr struct {
		Magic, Version uint32
		NT, NKV        uint64
	}
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return fmt.Errorf("not a GGUF file: %w", err)
	}
	if hdr.Magic != Magic {
		return errors.New("not a GGUF file (bad magic)")
	}
	if hdr.Version != 2 && hdr.Version != 3 {
		return fmt.Errorf("GGUF version %d is not supported (want 2 or 3)", hdr.Version)
	}
	g.Version = hdr.Version
	if hdr.NKV > maxArray || hdr.NT > maxArray || !fits(r, hdr.NKV, 12) || !fits(r, hdr.NT, 24) {
		return errors.New("implausible tensor or key count")
	}
	for i := uint64(0); i < hdr.NKV; i++ {
		k, err := readString(r)
		if err != nil {
			return fmt.Errorf("key %d: %w", i, err)
		}
		var t uint32
		if err := binary.Read(r, binary.LittleEndian, &t); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		v, err := readValue(r, ValueType(t))
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		if k == AlignmentKey {
			a, ok := v.(uint32)
			if !ok || a == 0 || a%8 != 0 {
				return fmt.Errorf("bad %s %v", AlignmentKey, v)
			}
			g.Alignment = int64(a)
		}
		g.KVs = append(g.KVs, KV{Key: k, Value: v})
	}
	for i := uint64(0); i < hdr.NT; i++ {
		name, err := readString(r)
		if err != nil {
			return fmt.Errorf("tensor %d: %w", i, err)
		}
		var nd uint32
		if err := binary.Read(r, binary.LittleEndian, &nd); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if nd > 8 {
			return fmt.Errorf("tensor %q: %d dimensions", name, nd)
		}
		t := TensorInfo{Name: name, Dims: make([]uint64, nd)}
		if err := binary.Read(r, binary.LittleEndian, t.Dims); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		var typ uint32
		if err := binary.Read(r, binary.LittleEndian, &typ); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		t.Type = GGMLType(typ)
		if err := binary.Read(r, binary.LittleEndian, &t.Offset); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		g.Tensors = append(g.Tensors, t)
	}
	g.DataOffset = (r.n + g.Alignment - 1) / g.Alignment * g.Alignment
	for _, t := range g.Tensors {
		if t.Offset%uint64(g.Alignment) != 0 {
			return fmt.Errorf("tensor %q: offset %d is not aligned to %d", t.Name, t.Offset, g.Alignment)
		}
		if n, err := t.Bytes(); err == nil && g.DataOffset+int64(t.Offset)+n > g.Size {
			return fmt.Errorf("tensor %q: data runs past the end of the file", t.Name)
		}
	}
	return nil
}

func readString(r io.Reader) (string, error) {
	var n uint64
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return "", err
	}
	if n > maxString || !fits(r, n, 1) {
		return "", fmt.Errorf("string of %d bytes runs past the end of the file", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

func readValue(r io.Reader, t ValueType) (any, error) {
	rd := func(v any) (any, error) {
		err := binary.Read(r, binary.LittleEndian, v)
		return v, err
	}
	var err error
	switch t {
	case TypeUint8:
		var v uint8
		_, err = rd(&v)
		return v, err
	case TypeInt8:
		var v int8
		_, err = rd(&v)
		return v, err
	case TypeUint16:
		var v uint16
		_, err = rd(&v)
		return v, err
	case TypeInt16:
		var v int16
		_, err = rd(&v)
		return v, err
	case TypeUint32:
		var v uint32
		_, err = rd(&v)
		return v, err
	case TypeInt32:
		var v int32
		_, err = rd(&v)
		return v, err
	case TypeFloat32:
		var v uint32
		_, err = rd(&v)
		return math.Float32frombits(v), err
	case TypeBool:
		var v uint8
		_, err = rd(&v)
		return v != 0, err
	case TypeString:
		return readString(r)
	case TypeUint64:
		var v uint64
		_, err = rd(&v)
		return v, err
	case TypeInt64:
		var v int64
		_, err = rd(&v)
		return v, err
	case TypeFloat64:
		var v uint64
		_, err = rd(&v)
		return math.Float64frombits(v), err
	case TypeArray:
		var hdr struct {
			T uint32
			N uint64
		}
		if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
			return nil, err
		}
		if hdr.N > maxArray || !fits(r, hdr.N, 1) {
			return nil, fmt.Errorf("array of %d elements runs past the end of the file", hdr.N)
		}
		return readArray(r, ValueType(hdr.T), int(hdr.N))
	}
	return nil, fmt.Errorf("unknown value type %d", t)
}

func readArray(r io.Reader, t ValueType, n int) (any, error) {
	fixed := func(v any) (any, error) { return v, binary.Read(r, binary.LittleEndian, v) }
	switch t {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			s, err := readString(r)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	case TypeFloat32:
		v, err := fixed(make([]float32, n))
		return v.([]float32), err
	case TypeInt32:
		v, err := fixed(make([]int32, n))
		return v.([]int32), err
	case TypeUint32:
		v, err := fixed(make([]uint32, n))
		return v.([]uint32), err
	case TypeUint8:
		v, err := fixed(make([]uint8, n))
		return v.([]uint8), err
	case TypeInt64:
		v, err := fixed(make([]int64, n))
		return v.([]int64), err
	case TypeFloat64:
		v, err := fixed(make([]float64, n))
		return v.([]float64), err
	case TypeBool:
		raw := make([]uint8, n)
		if err := binary.Read(r, binary.LittleEndian, raw); err != nil {
			return nil, err
		}
		out := make([]bool, n)
		for i, b := range raw {
			out[i] = b != 0
		}
		return out, nil
	}
	return nil, fmt.Errorf("arrays of value type %d are not supported", t)
}

// Get returns the value of a metadata key.
func (g *File) Get(key string) (any, bool) {
	for _, kv := range g.KVs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Tensor finds a tensor descriptor by name.
func (g *File) Tensor(name string) (TensorInfo, bool) {
	for _, t := range g.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// ReadTensor returns a tensor's raw data.
func (g *File) ReadTensor(t TensorInfo) ([]byte, error) {
	n, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := g.f.ReadAt(b, g.DataOffset+int64(t.Offset)); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", g.Path, t.Name, err)
	}
	return b, nil
}

// Close closes the file.
func (g *File) Close() error { return g.f.Close() }
