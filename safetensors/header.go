package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/mixq/mixq/quant"
)

// MaxHeaderSize bounds the JSON header (N). It matches the reference
// implementation's limit in spirit: large enough for any real checkpoint,
// small enough that a corrupt length cannot make us allocate gigabytes.
const MaxHeaderSize = 100 << 20

// MaxTensors bounds the number of tensors in one file. Real checkpoints
// have at most tens of thousands per shard.
const MaxTensors = 1 << 20

// maxTensors is the limit ParseHeader enforces; tests lower it so the
// check can be exercised without a 50 MB header.
var maxTensors = MaxTensors

// metadataKey is the reserved header entry holding string->string metadata.
const metadataKey = "__metadata__"

var (
	errUnknownDType = errors.New("unknown dtype")
	errNegativeDim  = errors.New("negative dimension")
	errOverflow     = errors.New("size overflows int64")
)

// TensorInfo describes one tensor of a file. Begin and End are byte offsets
// relative to the start of the data buffer (Header.DataStart).
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	Begin int64
	End   int64
}

// NumElements is the product of the shape (1 for a scalar, 0 when any
// dimension is 0). For a TensorInfo from ParseHeader it cannot overflow.
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Header is the validated header of a file.
type Header struct {
	// Tensors are sorted by Begin (then End, then Name, so that zero-sized
	// tensors sharing an offset have a stable order) and tile the data
	// buffer exactly.
	Tensors []TensorInfo
	// Metadata is the "__metadata__" object, nil when the header has none.
	Metadata map[string]string
	// DataStart is the absolute file offset of the data buffer, 8+N.
	DataStart int64

	index map[string]int
}

// Lookup finds a tensor by name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	if h.index == nil {
		// A Header built by hand rather than by ParseHeader.
		for _, t := range h.Tensors {
			if t.Name == name {
				return t, true
			}
		}
		return TensorInfo{}, false
	}
	i, ok := h.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// ParseHeader reads and validates the header of a safetensors file of
// fileSize bytes. Every error is marked with quant.ErrInput and says what is
// wrong; errors about one tensor are *quant.TensorError (with File empty).
func ParseHeader(r io.ReaderAt, fileSize int64) (*Header, error) {
	h, err := parseHeader(r, fileSize)
	if err != nil {
		return nil, quant.InputError(err)
	}
	return h, nil
}

func parseHeader(r io.ReaderAt, fileSize int64) (*Header, error) {
	if fileSize < 8 {
		return nil, fmt.Errorf("safetensors: file is %d bytes, shorter than the 8-byte header length", fileSize)
	}
	var prefix [8]byte
	if err := readFull(r, prefix[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	switch {
	case n == 0:
		return nil, errors.New("safetensors: header length is 0")
	case n > MaxHeaderSize:
		return nil, fmt.Errorf("safetensors: header length %d exceeds the maximum of %d bytes", n, MaxHeaderSize)
	case int64(n) > fileSize-8:
		return nil, fmt.Errorf("safetensors: header length %d runs past the end of the %d-byte file", n, fileSize)
	}
	raw := make([]byte, n)
	if err := readFull(r, raw, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading %d-byte header: %w", n, err)
	}
	h, err := decodeHeader(raw)
	if err != nil {
		return nil, err
	}
	h.DataStart = 8 + int64(n)
	if err := h.checkLayout(fileSize - h.DataStart); err != nil {
		return nil, err
	}
	return h, nil
}

// readFull is io.ReadFull for a ReaderAt: ReadAt may return io.EOF together
// with a full buffer at the end of the file, which is success.
func readFull(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// decodeHeader walks the JSON token by token rather than unmarshalling into
// a map: a map would silently keep the last of two entries with the same
// name, and a strict reader must reject such a file instead.
func decodeHeader(raw []byte) (*Header, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("safetensors: header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return nil, fmt.Errorf("safetensors: header is not a JSON object: %w", err)
	}
	h := &Header{index: map[string]int{}}
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("safetensors: header JSON: %w", err)
		}
		name, _ := tok.(string) // object keys are always strings
		if name == metadataKey {
			if seenMeta {
				return nil, fmt.Errorf("safetensors: duplicate %q entry in header", metadataKey)
			}
			seenMeta = true
			if h.Metadata, err = decodeMetadata(dec); err != nil {
				return nil, fmt.Errorf("safetensors: %s: %w", metadataKey, err)
			}
			continue
		}
		if _, dup := h.index[name]; dup {
			return nil, tensorErr(name, errors.New("duplicate tensor name in header"))
		}
		if len(h.Tensors) == maxTensors {
			return nil, fmt.Errorf("safetensors: header has more than %d tensors", maxTensors)
		}
		t, err := decodeTensor(dec, name)
		if err != nil {
			return nil, tensorErr(name, err)
		}
		h.index[name] = len(h.Tensors)
		h.Tensors = append(h.Tensors, t)
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, fmt.Errorf("safetensors: header JSON: %w", err)
	}
	// Only whitespace (the writer's space padding) may follow the object.
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("safetensors: header JSON after the object: %w", err)
		}
		return nil, fmt.Errorf("safetensors: header has data after the JSON object: %v", tok)
	}
	return h, nil
}

func tensorErr(name string, err error) error {
	return &quant.TensorError{Tensor: name, Err: err}
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("expected %q, found %s", want, describe(tok))
	}
	return nil
}

// describe names a JSON token for an error message.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return strconv.Quote(v.String())
	case string:
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + v.String()
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

func decodeMetadata(dec *json.Decoder) (map[string]string, error) {
	if err := expectDelim(dec, '{'); err != nil {
		return nil, fmt.Errorf("must be an object of strings: %w", err)
	}
	m := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("duplicate key %q", key)
		}
		if tok, err = dec.Token(); err != nil {
			return nil, err
		}
		val, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("value of key %q must be a string, found %s", key, describe(tok))
		}
		m[key] = val
	}
	return m, expectDelim(dec, '}')
}

// decodeTensor reads one tensor entry. Each of the three fields must be
// present exactly once; unknown fields are rejected, since a file carrying
// them was not written for this format version and may mean something else.
func decodeTensor(dec *json.Decoder, name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	tok, err := dec.Token()
	if err != nil {
		return t, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return t, fmt.Errorf("entry must be an object with dtype, shape and data_offsets, found %s", describe(tok))
	}
	var haveDType, haveShape, haveOffsets bool
	for dec.More() {
		if tok, err = dec.Token(); err != nil {
			return t, err
		}
		field, _ := tok.(string)
		switch field {
		case "dtype":
			if haveDType {
				return t, errors.New("duplicate field \"dtype\"")
			}
			haveDType = true
			if tok, err = dec.Token(); err != nil {
				return t, err
			}
			s, ok := tok.(string)
			if !ok {
				return t, fmt.Errorf("dtype must be a string, found %s", describe(tok))
			}
			t.DType = DType(s)
		case "shape":
			if haveShape {
				return t, errors.New("duplicate field \"shape\"")
			}
			haveShape = true
			if t.Shape, err = decodeInts(dec, "shape", -1); err != nil {
				return t, err
			}
		case "data_offsets":
			if haveOffsets {
				return t, errors.New("duplicate field \"data_offsets\"")
			}
			haveOffsets = true
			offs, err := decodeInts(dec, "data_offsets", 2)
			if err != nil {
				return t, err
			}
			t.Begin, t.End = offs[0], offs[1]
		default:
			return t, fmt.Errorf("unknown field %q", field)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return t, err
	}
	switch {
	case !haveDType:
		return t, errors.New("missing field \"dtype\"")
	case !haveShape:
		return t, errors.New("missing field \"shape\"")
	case !haveOffsets:
		return t, errors.New("missing field \"data_offsets\"")
	}
	return t, checkTensor(t)
}

// decodeInts reads an array of integers; want >= 0 requires that length.
// Negative values are returned as they are (checkTensor reports them with
// context) but fractions, exponents and values beyond int64 are errors here.
func decodeInts(dec *json.Decoder, field string, want int) ([]int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("%s must be an array of integers, found %s", field, describe(tok))
	}
	out := []int64{}
	for dec.More() {
		if tok, err = dec.Token(); err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s must be an array of integers, found %s", field, describe(tok))
		}
		v, err := strconv.ParseInt(num.String(), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s element %s is not an integer in the int64 range", field, num)
		}
		out = append(out, v)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, err
	}
	if want >= 0 && len(out) != want {
		return nil, fmt.Errorf("%s must have %d elements, found %d", field, want, len(out))
	}
	return out, nil
}

// checkTensor validates one tensor on its own: dtype, shape and the size of
// its byte range. Placement relative to the others is checkLayout's job.
func checkTensor(t TensorInfo) error {
	if t.DType.Size() == 0 {
		return fmt.Errorf("unknown dtype %q", t.DType)
	}
	if t.Begin < 0 || t.End < 0 {
		return fmt.Errorf("negative data_offsets [%d, %d]", t.Begin, t.End)
	}
	if t.Begin > t.End {
		return fmt.Errorf("data_offsets [%d, %d]: begin is after end", t.Begin, t.End)
	}
	_, nb, err := numBytes(t.DType, t.Shape)
	switch {
	case errors.Is(err, errNegativeDim):
		return fmt.Errorf("negative dimension in shape %v", t.Shape)
	case err != nil:
		return fmt.Errorf("shape %v of %s: %w", t.Shape, t.DType, err)
	}
	if nb != t.End-t.Begin {
		return fmt.Errorf("shape %v of %s needs %d bytes but data_offsets [%d, %d] hold %d",
			t.Shape, t.DType, nb, t.Begin, t.End, t.End-t.Begin)
	}
	return nil
}

// checkLayout sorts the tensors by offset and requires them to tile the
// data buffer of dataSize bytes exactly: a gap would be bytes no tensor
// owns and an overlap would alias two tensors, and either means the header
// and the data disagree.
func (h *Header) checkLayout(dataSize int64) error {
	slices.SortFunc(h.Tensors, func(a, b TensorInfo) int {
		if a.Begin != b.Begin {
			return cmp.Compare(a.Begin, b.Begin)
		}
		if a.End != b.End {
			return cmp.Compare(a.End, b.End)
		}
		if a.Name < b.Name {
			return -1
		}
		return 1 // names are unique
	})
	var end int64
	prev := ""
	for i, t := range h.Tensors {
		h.index[t.Name] = i
		switch {
		case t.Begin > end && i == 0:
			return tensorErr(t.Name, fmt.Errorf("data_offsets [%d, %d]: the first tensor must begin at 0", t.Begin, t.End))
		case t.Begin > end:
			return tensorErr(t.Name, fmt.Errorf("data_offsets [%d, %d] leave a gap after tensor %q, which ends at %d", t.Begin, t.End, prev, end))
		case t.Begin < end:
			return tensorErr(t.Name, fmt.Errorf("data_offsets [%d, %d] overlap tensor %q, which ends at %d", t.Begin, t.End, prev, end))
		}
		end, prev = t.End, t.Name
	}
	if end != dataSize {
		if len(h.Tensors) == 0 {
			return fmt.Errorf("safetensors: header has no tensors but the data buffer holds %d bytes", dataSize)
		}
		return fmt.Errorf("safetensors: tensors end at data offset %d but the data buffer holds %d bytes", end, dataSize)
	}
	return nil
}
