package qformat

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Entry is one original tensor of a quantized checkpoint.
type Entry struct {
	Name   string
	Record Record
	// Layout is set for INT8 and INT4 entries.
	Layout quant.Layout
	data   *checkpoint.Tensor // the qweight, or the tensor itself
	scales *checkpoint.Tensor // nil unless quantized
}

// Precision returns the stored precision, or 0 for kept tensors.
func (e *Entry) Precision() quant.Precision {
	p, _ := quant.ParsePrecision(e.Record.Precision)
	return p
}

// StoredDType is the dtype of the stored data: I8 or U8 codes (with F16
// scales) for INT8 and INT4, F16 or F32, or the original dtype when kept.
func (e *Entry) StoredDType() safetensors.DType { return e.data.DType }

// EffectiveGroup is the number of columns one scale covers: the group size,
// or the row length when a row is shorter than one group; 0 for a tensor
// that is not quantized.
func (e *Entry) EffectiveGroup() int {
	if e.scales == nil {
		return 0
	}
	return min(e.Layout.GroupSize, e.Layout.Cols)
}

// NumElements is the element count of the original tensor.
func (e *Entry) NumElements() int64 { return Input{Shape: e.Record.Shape}.NumElements() }

// StoredBytes is the data the entry occupies on disk (codes plus scales).
func (e *Entry) StoredBytes() int64 {
	n := int64(len(e.data.Raw()))
	if e.scales != nil {
		n += int64(len(e.scales.Raw()))
	}
	return n
}

// Model is an open quantized checkpoint.
type Model struct {
	Checkpoint *checkpoint.Checkpoint
	Entries    []*Entry // in file order
	byName     map[string]*Entry
}

// IsQuantized reports whether the checkpoint at path carries mixq metadata,
// without validating the records.
func IsQuantized(ck *checkpoint.Checkpoint) bool {
	for _, t := range ck.Tensors {
		if t.File.Header().Metadata[FormatKey] != "" {
			return true
		}
	}
	return false
}

// storedDTypes are the dtypes a mixq checkpoint may hold.
var storedDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.I8, safetensors.U8}

// Open opens and validates a quantized checkpoint (a directory or one
// .safetensors file).
func Open(path string) (*Model, error) {
	ck, err := checkpoint.Open(path, checkpoint.Options{AllowedDTypes: storedDTypes})
	if err != nil {
		return nil, err
	}
	m, err := FromCheckpoint(ck)
	if err != nil {
		ck.Close()
		return nil, err
	}
	return m, nil
}

// FromCheckpoint interprets an open checkpoint as a quantized one.
func FromCheckpoint(ck *checkpoint.Checkpoint) (*Model, error) {
	m := &Model{Checkpoint: ck, byName: map[string]*Entry{}}
	claimed := map[string]bool{}
	bad := func(t *checkpoint.Tensor, name string, format string, args ...any) error {
		return quant.InputError(&quant.TensorError{File: t.File.Path(), Tensor: name, Err: fmt.Errorf(format, args...)})
	}
	seenFormat := false
	for _, t := range ck.Tensors {
		md := t.File.Header().Metadata
		if f := md[FormatKey]; f != "" {
			if f != Format {
				return nil, quant.InputError(fmt.Errorf("%s: format %q is not supported (this mixq reads %q)", t.File.Path(), f, Format))
			}
			seenFormat = true
		}
		// A tensor stored under its own name has a record under that exact
		// name; codes are stored as NAME.qweight with the record under
		// NAME. The exact name is tried first, so an original tensor that
		// happens to end in ".qweight" is still read as itself.
		name, isQ := t.Name, false
		raw, ok := md[RecordPrefix+name]
		if !ok {
			base, cut := strings.CutSuffix(t.Name, QWeight)
			if !cut {
				continue // scales, or a stray tensor: reported below if unclaimed
			}
			if raw, ok = md[RecordPrefix+base]; !ok {
				continue
			}
			name, isQ = base, true
		}
		e := &Entry{Name: name, data: t}
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e.Record); err != nil {
			return nil, bad(t, name, "bad mixq record: %v", err)
		}
		if err := m.bind(ck, e, isQ); err != nil {
			return nil, bad(t, name, "%v", err)
		}
		if _, dup := m.byName[name]; dup {
			return nil, bad(t, name, "stored twice")
		}
		claimed[t.Name] = true
		if e.scales != nil {
			if claimed[e.scales.Name] {
				return nil, bad(t, name, "its scales %q are claimed twice", e.scales.Name)
			}
			claimed[e.scales.Name] = true
		}
		m.byName[name] = e
		m.Entries = append(m.Entries, e)
	}
	if !seenFormat {
		return nil, quant.InputError(fmt.Errorf("%s is not a mixq quantized checkpoint (no %q metadata)", ck.Path, FormatKey))
	}
	for _, t := range ck.Tensors {
		if !claimed[t.Name] {
			return nil, bad(t, t.Name, "has no mixq record")
		}
	}
	return m, nil
}

// bind checks an entry's record against the stored tensors.
func (m *Model) bind(ck *checkpoint.Checkpoint, e *Entry, isQ bool) error {
	r := e.Record
	for _, d := range r.Shape {
		if d < 0 {
			return fmt.Errorf("record has negative dimension in %v", r.Shape)
		}
	}
	if _, ok := elements(r.Shape); !ok {
		return fmt.Errorf("record shape %v has more elements than an int64 holds", r.Shape)
	}
	switch r.Precision {
	case Keep, "f32", "f16":
		if isQ {
			return fmt.Errorf("record says %s but the tensor is stored as codes", r.Precision)
		}
		want := r.DType
		if r.Precision == "f32" {
			want = safetensors.F32
		} else if r.Precision == "f16" {
			want = safetensors.F16
		}
		if e.data.DType != want || !slices.Equal(e.data.Shape, r.Shape) {
			return fmt.Errorf("stored as %s%v, record says %s%v", e.data.DType, e.data.Shape, want, r.Shape)
		}
		return nil
	case "int8", "int4":
	default:
		return fmt.Errorf("record has unknown precision %q", r.Precision)
	}
	if !isQ {
		return fmt.Errorf("record says %s but there is no %s tensor", r.Precision, e.Name+QWeight)
	}
	p, _ := quant.ParsePrecision(r.Precision)
	if len(r.Shape) < 1 {
		return errors.New("quantized record has no shape")
	}
	cols := r.Shape[len(r.Shape)-1]
	n, _ := elements(r.Shape) // checked above
	rows := n / max(cols, 1)
	l := quant.Layout{Rows: int(rows), Cols: int(cols), GroupSize: r.GroupSize, Precision: p}
	if err := l.Validate(); err != nil {
		return err
	}
	wantQ := safetensors.I8
	if p == quant.INT4 {
		wantQ = safetensors.U8
	}
	if e.data.DType != wantQ || !slices.Equal(e.data.Shape, []int64{rows, int64(l.RowBytes())}) {
		return fmt.Errorf("codes stored as %s%v, want %s[%d %d]", e.data.DType, e.data.Shape, wantQ, rows, l.RowBytes())
	}
	s, ok := ck.Lookup(e.Name + Scales)
	if !ok {
		return fmt.Errorf("missing %s", e.Name+Scales)
	}
	if s.DType != safetensors.F16 || !slices.Equal(s.Shape, []int64{rows, int64(l.GroupsPerRow())}) {
		return fmt.Errorf("scales stored as %s%v, want F16[%d %d]", s.DType, s.Shape, rows, l.GroupsPerRow())
	}
	e.Layout, e.scales = l, s
	return nil
}

// Lookup finds an original tensor by name.
func (m *Model) Lookup(name string) (*Entry, bool) {
	e, ok := m.byName[name]
	return e, ok
}

// Codes returns the packed codes (a view of the mapped file, valid until
// Close) and a copy of the scales of a quantized entry, after checking them
// as the format promises (see checkScales and checkCodes): a NaN, infinite,
// negative or misplaced zero scale, or a code outside the written range,
// is an error marked with quant.ErrInput naming the tensor, row and
// column. Every reader of the codes (Float32, model.Load, Dequantize) goes
// through Codes, so nothing is computed from unchecked codes. The check
// reads the codes once, which those readers do anyway.
func (m *Model) Codes(e *Entry) (packed []byte, scales []uint16, err error) {
	if e.scales == nil {
		return nil, nil, fmt.Errorf("tensor %q is stored as %s, not quantized", e.Name, e.Record.Precision)
	}
	raw := e.scales.Raw()
	scales = make([]uint16, len(raw)/2)
	// The scales and codes are read from the mappings: a file truncated
	// under them faults, and that is an error naming the file and tensor.
	if err := catch(e.scales, e.Name, func() error {
		for i := range scales {
			scales[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	packed = e.data.Raw()
	if err := catch(e.data, e.Name, func() error { return checkCodes(e.Layout, packed) }); err != nil {
		return nil, nil, err
	}
	if err := catch(e.scales, e.Name, func() error { return checkScales(e.Layout, packed, scales) }); err != nil {
		return nil, nil, err
	}
	return packed, scales, nil
}

// catch runs fn, which reads t's mapping, and turns its error or a memory
// fault (the file truncated or changed under the mapping) into an input
// error naming t's file and the entry.
func catch(t *checkpoint.Tensor, entry string, fn func() error) error {
	var err error
	if ferr := fault.Catch(func() { err = fn() }); ferr != nil {
		err = ferr
	}
	if err == nil {
		return nil
	}
	return quant.InputError(&quant.TensorError{File: t.File.Path(), Tensor: entry, Err: err})
}

// Float32 writes the original tensor, dequantized where needed, into dst
// (len(dst) must equal its element count). Quantized tensors go through the
// backend's Dequantize.
func (m *Model) Float32(e *Entry, dst []float32, b quant.Backend) error {
	if int64(len(dst)) != e.NumElements() {
		return fmt.Errorf("tensor %q has %d elements, buffer %d", e.Name, e.NumElements(), len(dst))
	}
	if e.scales == nil {
		return e.DecodeRange(dst, 0, len(dst))
	}
	packed, scales, err := m.Codes(e)
	if err != nil {
		return err
	}
	if err := b.Dequantize(dst, packed, scales, e.Layout); err != nil {
		return &quant.TensorError{Tensor: e.Name, Err: err}
	}
	return nil
}

// Release drops the mapped pages of an entry (see safetensors.File.Release).
func (m *Model) Release(e *Entry) {
	e.data.Release()
	if e.scales != nil {
		e.scales.Release()
	}
}

// Close unmaps the files.
func (m *Model) Close() error { return m.Checkpoint.Close() }

// DecodeRange converts elements [lo, hi) of a tensor stored in floating
// point (kept, F16 or F32) into dst[:hi-lo]. mixq writes only finite values
// (it refuses NaN and ±Inf when quantizing), so a NaN or ±Inf here is a
// corrupt or foreign file: an input error naming the file, the tensor and
// the element's flat index, as is a memory fault while reading the mapping.
func (e *Entry) DecodeRange(dst []float32, lo, hi int) error {
	if e.scales != nil {
		return fmt.Errorf("tensor %q is quantized; use Model.Codes", e.Name)
	}
	sz := e.data.DType.Size()
	dst = dst[:hi-lo]
	return catch(e.data, e.Name, func() error {
		if err := checkpoint.DecodeFloat32(dst, e.data.Raw()[lo*sz:hi*sz], e.data.DType); err != nil {
			return err
		}
		for i, v := range dst {
			if !quant.IsFinite(v) {
				return &quant.NonFiniteError{Index: lo + i, Value: v}
			}
		}
		return nil
	})
}

// File is the path of the shard holding the entry's data.
func (e *Entry) File() string { return e.data.File.Path() }
