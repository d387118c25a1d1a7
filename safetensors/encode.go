package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Spec declares one tensor of a file to be written.
type Spec struct {
	Name  string
	DType DType
	Shape []int64
}

// Bytes is the size of the tensor's data, or -1 when the spec is invalid
// (unknown dtype, negative dimension, or a size that overflows int64).
func (s Spec) Bytes() int64 {
	_, n, err := numBytes(s.DType, s.Shape)
	if err != nil {
		return -1
	}
	return n
}

func (s Spec) validate() error {
	if !utf8.ValidString(s.Name) {
		// JSON encoding would replace the bad bytes and silently rename it.
		return fmt.Errorf("safetensors: tensor name %q is not valid UTF-8", s.Name)
	}
	if s.Name == metadataKey {
		return fmt.Errorf("safetensors: tensor name %q is reserved", s.Name)
	}
	if _, _, err := numBytes(s.DType, s.Shape); err != nil {
		return fmt.Errorf("safetensors: tensor %q: dtype %q shape %v: %w", s.Name, s.DType, s.Shape, err)
	}
	return nil
}

// EncodeHeader returns the complete prefix of the file the Writer produces
// for specs: the 8-byte little-endian length N followed by N bytes of
// compact JSON, padded with spaces so that the data buffer starts at a
// multiple of 8 (aligned for every dtype when the file is mapped).
//
// The encoding is deterministic: "__metadata__" first (omitted when
// metadata is empty) with its keys sorted, then the tensors in the given
// order, their data_offsets laid out contiguously in that order.
func EncodeHeader(specs []Spec, metadata map[string]string) ([]byte, error) {
	if len(specs) > MaxTensors {
		return nil, fmt.Errorf("safetensors: %d tensors exceed the maximum of %d", len(specs), MaxTensors)
	}
	var b bytes.Buffer
	b.Write(make([]byte, 8)) // length, filled in below
	b.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("safetensors: metadata entry %q: %q is not valid UTF-8", k, v)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		comma()
		writeString(&b, metadataKey)
		b.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(&b, k)
			b.WriteByte(':')
			writeString(&b, metadata[k])
		}
		b.WriteByte('}')
	}
	seen := make(map[string]bool, len(specs))
	var offset int64
	for _, s := range specs {
		if err := s.validate(); err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("safetensors: tensor %q declared twice", s.Name)
		}
		seen[s.Name] = true
		n := s.Bytes()
		if offset > 1<<62-n { // keeps the whole file size far from overflow
			return nil, errors.New("safetensors: total data size overflows")
		}
		comma()
		writeString(&b, s.Name)
		b.WriteString(`:{"dtype":`)
		writeString(&b, string(s.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range s.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteString(`],"data_offsets":[`)
		b.WriteString(strconv.FormatInt(offset, 10))
		b.WriteByte(',')
		offset += n
		b.WriteString(strconv.FormatInt(offset, 10))
		b.WriteString("]}")
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	out := b.Bytes()
	n := len(out) - 8
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header of %d bytes exceeds the maximum of %d", n, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(out, uint64(n))
	return out, nil
}

// writeString writes s as a JSON string. HTML escaping is off so names with
// '<', '>' or '&' come out as other writers produce them.
func writeString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a valid UTF-8 string always encodes
	b.Truncate(b.Len() - 1) // Encode appends a newline
}

// FileSize is the exact size of the file Create(path, specs, metadata)
// produces.
func FileSize(specs []Spec, metadata map[string]string) (int64, error) {
	prefix, err := EncodeHeader(specs, metadata)
	if err != nil {
		return 0, err
	}
	size := int64(len(prefix))
	for _, s := range specs {
		size += s.Bytes()
	}
	return size, nil
}
