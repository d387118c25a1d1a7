package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mixq/mixq/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// entry is the JSON of one tensor entry, for assembling corrupt headers.
func entry(name, dtype, shape string, begin, end int64) string {
	return fmt.Sprintf(`%q:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, dtype, shape, begin, end)
}

func TestParseHeaderRejects(t *testing.T) {
	lengthOnly := func(n uint64, total int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, n)
		return append(b, bytes.Repeat([]byte(" "), total-8)...)
	}
	w := func(begin, end int64) string { return entry("w", "F32", "[2]", begin, end) }
	for _, tc := range []struct {
		name string
		file []byte
		want []string // all must appear in the message
	}{
		{"shorter than 8 bytes", []byte{1, 2, 3, 4, 5}, []string{"file is 5 bytes", "8-byte header length"}},
		{"empty file", nil, []string{"file is 0 bytes"}},
		{"zero header length", lengthOnly(0, 16), []string{"header length is 0"}},
		{"header length over the maximum", lengthOnly(MaxHeaderSize+1, 16), []string{"header length 104857601 exceeds the maximum of 104857600"}},
		{"huge header length", lengthOnly(1<<63, 16), []string{"exceeds the maximum"}},
		{"header past end of file", lengthOnly(100, 50), []string{"header length 100 runs past the end of the 50-byte file"}},
		{"invalid UTF-8", rawFile("{\"w\xff\":1}", 0), []string{"not valid UTF-8"}},
		{"not an object", rawFile(`[1,2]`, 0), []string{"not a JSON object", "an array"}},
		{"a string", rawFile(`"x"`, 0), []string{"not a JSON object"}},
		{"truncated JSON", rawFile(`{"w":{"dtype":"F32"`, 0), []string{`tensor "w"`}},
		{"syntax error in a key", rawFile(`{1:2}`, 0), []string{"header JSON", "invalid character"}},
		{"syntax error in an entry", rawFile(`{"w" 1}`, 0), []string{`tensor "w"`, "invalid character"}},
		{"data after the object", rawFile(`{} {}`, 0), []string{"data after the JSON object"}},
		{"garbage after the object", rawFile(`{}x`, 0), []string{"after the object"}},
		{"duplicate tensor names", rawFile("{"+w(0, 8)+","+entry("w", "F32", "[2]", 8, 16)+"}", 16), []string{`tensor "w"`, "duplicate tensor name"}},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, 0), []string{`duplicate "__metadata__"`}},
		{"unknown dtype", rawFile("{"+entry("w", "F7", "[2]", 0, 8)+"}", 8), []string{`tensor "w"`, `unknown dtype "F7"`}},
		{"lower-case dtype", rawFile("{"+entry("w", "f32", "[2]", 0, 8)+"}", 8), []string{`unknown dtype "f32"`}},
		{"dtype not a string", rawFile(`{"w":{"dtype":4,"shape":[],"data_offsets":[0,4]}}`, 4), []string{`tensor "w"`, "dtype must be a string, found number 4"}},
		{"negative dimension", rawFile("{"+entry("w", "F32", "[2,-1]", 0, 8)+"}", 8), []string{`tensor "w"`, "negative dimension in shape [2 -1]"}},
		{"fractional dimension", rawFile("{"+entry("w", "F32", "[2.5]", 0, 8)+"}", 8), []string{"shape element 2.5 is not an integer"}},
		{"exponent dimension", rawFile("{"+entry("w", "F32", "[2e0]", 0, 8)+"}", 8), []string{"not an integer"}},
		{"dimension beyond int64", rawFile("{"+entry("w", "F32", "[9223372036854775808]", 0, 8)+"}", 8), []string{"not an integer in the int64 range"}},
		{"shape not an array", rawFile(`{"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}`, 8), []string{"shape must be an array"}},
		{"shape of strings", rawFile(`{"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, 8), []string{"shape must be an array of integers, found string"}},
		{"shape product overflow", rawFile("{"+entry("w", "F32", "[4294967296,4294967296]", 0, 8)+"}", 8), []string{`tensor "w"`, "shape [4294967296 4294967296] of F32", "overflows int64"}},
		{"byte size overflow", rawFile("{"+entry("w", "F64", "[2305843009213693952]", 0, 8)+"}", 8), []string{"overflows int64"}},
		{"size mismatch", rawFile("{"+entry("w", "F32", "[2,3]", 0, 20)+"}", 20), []string{`tensor "w"`, "shape [2 3] of F32 needs 24 bytes but data_offsets [0, 20] hold 20"}},
		{"begin after end", rawFile("{"+w(8, 0)+"}", 8), []string{`tensor "w"`, "data_offsets [8, 0]: begin is after end"}},
		{"negative offset", rawFile("{"+w(-8, 0)+"}", 8), []string{"negative data_offsets [-8, 0]"}},
		{"one offset", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[8]}}`, 8), []string{"data_offsets must have 2 elements, found 1"}},
		{"three offsets", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, 8), []string{"data_offsets must have 2 elements, found 3"}},
		{"first not at zero", rawFile("{"+w(4, 12)+"}", 12), []string{`tensor "w"`, "data_offsets [4, 12]: the first tensor must begin at 0"}},
		{"gap", rawFile("{"+w(0, 8)+","+entry("v", "F32", "[2]", 12, 20)+"}", 20), []string{`tensor "v"`, `data_offsets [12, 20] leave a gap after tensor "w", which ends at 8`}},
		{"overlap", rawFile("{"+w(0, 8)+","+entry("v", "F32", "[2]", 4, 12)+"}", 12), []string{`tensor "v"`, `data_offsets [4, 12] overlap tensor "w", which ends at 8`}},
		{"same range twice", rawFile("{"+w(0, 8)+","+entry("v", "F32", "[2]", 0, 8)+"}", 8), []string{`tensor "w"`, `overlap tensor "v"`}},
		{"empty tensor inside another", rawFile("{"+w(0, 8)+","+entry("e", "F32", "[0]", 4, 4)+"}", 8), []string{`tensor "e"`, `overlap tensor "w"`}},
		{"data longer than tensors", rawFile("{"+w(0, 8)+"}", 12), []string{"tensors end at data offset 8 but the data buffer holds 12 bytes"}},
		{"data shorter than tensors", rawFile("{"+w(0, 8)+"}", 4), []string{"tensors end at data offset 8 but the data buffer holds 4 bytes"}},
		{"no tensors but data", rawFile(`{}`, 4), []string{"no tensors but the data buffer holds 4 bytes"}},
		{"metadata not an object", rawFile(`{"__metadata__":"x"}`, 0), []string{"__metadata__", "must be an object of strings"}},
		{"metadata number value", rawFile(`{"__metadata__":{"k":1}}`, 0), []string{"__metadata__", `value of key "k" must be a string, found number 1`}},
		{"metadata nested object", rawFile(`{"__metadata__":{"k":{}}}`, 0), []string{`value of key "k" must be a string, found an object`}},
		{"metadata duplicate key", rawFile(`{"__metadata__":{"k":"a","k":"b"}}`, 0), []string{`duplicate key "k"`}},
		{"entry is a number", rawFile(`{"w":5}`, 0), []string{`tensor "w"`, "entry must be an object", "found number 5"}},
		{"entry is null", rawFile(`{"w":null}`, 0), []string{`tensor "w"`, "found null"}},
		{"entry is an array", rawFile(`{"w":[]}`, 0), []string{`tensor "w"`, "found an array"}},
		{"missing dtype", rawFile(`{"w":{"shape":[2],"data_offsets":[0,8]}}`, 8), []string{`tensor "w"`, `missing field "dtype"`}},
		{"missing shape", rawFile(`{"w":{"dtype":"F32","data_offsets":[0,8]}}`, 8), []string{`missing field "shape"`}},
		{"missing offsets", rawFile(`{"w":{"dtype":"F32","shape":[2]}}`, 8), []string{`missing field "data_offsets"`}},
		{"unknown field", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]}}`, 8), []string{`tensor "w"`, `unknown field "stride"`}},
		{"duplicate field", rawFile(`{"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}`, 8), []string{`duplicate field "dtype"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHeader(bytes.NewReader(tc.file), int64(len(tc.file)))
			require.Error(t, err)
			assert.ErrorIs(t, err, quant.ErrInput)
			for _, want := range tc.want {
				assert.ErrorContains(t, err, want)
			}
		})
	}
}

func TestParseHeaderTooManyTensors(t *testing.T) {
	defer func(old int) { maxTensors = old }(maxTensors)
	maxTensors = 3
	var parts []string
	for i := range 4 {
		parts = append(parts, entry(fmt.Sprint("t", i), "U8", "[0]", 0, 0))
	}
	file := rawFile("{"+strings.Join(parts, ",")+"}", 0)
	_, err := ParseHeader(bytes.NewReader(file), int64(len(file)))
	require.ErrorContains(t, err, "header has more than 3 tensors")
	assert.ErrorIs(t, err, quant.ErrInput)

	file = rawFile("{"+strings.Join(parts[:3], ",")+"}", 0)
	_, err = ParseHeader(bytes.NewReader(file), int64(len(file)))
	require.NoError(t, err, "exactly the limit is fine")
}

func TestParseHeaderAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		data   int
		names  []string // in the expected sorted order
	}{
		{"empty object", `{}`, 0, nil},
		{"only metadata", `{"__metadata__":{}}`, 0, nil},
		{"unpadded, unsorted, whitespace", " { " + entry("b", "U8", "[2]", 2, 4) + " , " + entry("a", "U8", "[2]", 0, 2) + " } \n\t", 4, []string{"a", "b"}},
		{"zero-sized at same offset sorted by name", "{" + entry("z", "F32", "[0]", 0, 0) + "," + entry("y", "F32", "[3,0]", 0, 0) + "," + entry("a", "U8", "[1]", 0, 1) + "}", 1, []string{"y", "z", "a"}},
		{"zero-sized at the end", "{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("z", "F32", "[0]", 1, 1) + "}", 1, []string{"a", "z"}},
		{"scalar", "{" + entry("s", "F64", "[]", 0, 8) + "}", 8, []string{"s"}},
		{"zero dimension beside huge ones", "{" + entry("s", "F64", "[9223372036854775807,0,9223372036854775807]", 0, 0) + "}", 0, []string{"s"}},
		{"escaped name", `{"a\u00e9\"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1, []string{"aé\""}},
		{"tensor named like a field", "{" + entry("dtype", "U8", "[1]", 0, 1) + "}", 1, []string{"dtype"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := rawFile(tc.header, tc.data)
			h, err := ParseHeader(bytes.NewReader(file), int64(len(file)))
			require.NoError(t, err)
			var names []string
			for _, ti := range h.Tensors {
				names = append(names, ti.Name)
			}
			assert.Equal(t, tc.names, names)
			assert.Equal(t, int64(8+len(tc.header)), h.DataStart)
			checkInvariants(t, h, int64(len(file)))
		})
	}
}

// checkInvariants is what a successful ParseHeader promises.
func checkInvariants(t testing.TB, h *Header, fileSize int64) {
	t.Helper()
	require.GreaterOrEqual(t, h.DataStart, int64(9))
	require.LessOrEqual(t, h.DataStart, fileSize)
	var end int64
	names := map[string]bool{}
	for i, ti := range h.Tensors {
		require.False(t, names[ti.Name], "duplicate %q", ti.Name)
		names[ti.Name] = true
		require.NotEqual(t, metadataKey, ti.Name)
		require.Positive(t, ti.DType.Size(), ti.Name)
		require.Equal(t, end, ti.Begin, "tensor %d %q is not contiguous", i, ti.Name)
		require.LessOrEqual(t, ti.Begin, ti.End)
		for _, d := range ti.Shape {
			require.GreaterOrEqual(t, d, int64(0))
		}
		require.Equal(t, ti.End-ti.Begin, ti.NumElements()*int64(ti.DType.Size()), ti.Name)
		got, ok := h.Lookup(ti.Name)
		require.True(t, ok)
		require.Equal(t, ti, got)
		end = ti.End
	}
	require.Equal(t, fileSize-h.DataStart, end, "tensors cover the data buffer")
}

func TestOpenErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	require.NoError(t, os.WriteFile(bad, rawFile("{"+entry("w", "F7", "[2]", 0, 8)+"}", 8), 0o644))
	_, err := Open(bad)
	require.Error(t, err)
	assert.ErrorIs(t, err, quant.ErrInput)
	var te *quant.TensorError
	require.True(t, errors.As(err, &te))
	assert.Equal(t, bad, te.File)
	assert.Equal(t, "w", te.Tensor)
	assert.Equal(t, fmt.Sprintf(`%s: tensor "w": unknown dtype "F7"`, bad), err.Error())

	short := filepath.Join(dir, "short.safetensors")
	require.NoError(t, os.WriteFile(short, []byte{1}, 0o644))
	_, err = Open(short)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, short+": safetensors: file is 1 bytes")

	_, err = Open(filepath.Join(dir, "missing.safetensors"))
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.ErrorContains(t, err, "missing.safetensors")

	_, err = Open(dir)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, "not a regular file")
}

// FuzzParseHeader feeds arbitrary bytes to ParseHeader: it must never panic,
// and whatever it accepts must satisfy the documented invariants and
// re-encode to an equivalent header.
func FuzzParseHeader(f *testing.F) {
	specs := sampleSpecs()
	f.Add(encodeFile(f, specs, sampleMetadata, randomData(1, specs)))
	f.Add(encodeFile(f, specs[:3], nil, randomData(2, specs[:3])))
	f.Add(encodeFile(f, nil, nil, nil))
	f.Add(rawFile(`{"__metadata__":{"a":"b"},`+entry("w", "F32", "[2]", 0, 8)+"}", 8))
	f.Add(rawFile("{"+entry("z", "F32", "[0]", 0, 0)+","+entry("a", "U8", "[1]", 0, 1)+"}", 1))
	f.Add(rawFile("{"+entry("w", "F32", "[2,3]", 0, 20)+"}", 20))
	f.Add(rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, 8))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, file []byte) {
		h, err := ParseHeader(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			require.ErrorIs(t, err, quant.ErrInput)
			require.NotNil(t, err.Error())
			return
		}
		checkInvariants(t, h, int64(len(file)))
		require.Equal(t, int64(8+binary.LittleEndian.Uint64(file)), h.DataStart)

		// Re-encoding in offset order gives the same tensors and metadata.
		respecs := make([]Spec, len(h.Tensors))
		for i, ti := range h.Tensors {
			respecs[i] = Spec{Name: ti.Name, DType: ti.DType, Shape: ti.Shape}
		}
		prefix, err := EncodeHeader(respecs, h.Metadata)
		if err != nil {
			// Only possible when compact re-encoding grew past the limit,
			// which arbitrary small inputs cannot reach.
			t.Fatalf("re-encoding an accepted header failed: %v", err)
		}
		again := append(prefix, file[h.DataStart:]...)
		h2, err := ParseHeader(bytes.NewReader(again), int64(len(again)))
		require.NoError(t, err)
		require.Equal(t, len(h.Tensors), len(h2.Tensors))
		for i := range h.Tensors {
			a, b := h.Tensors[i], h2.Tensors[i]
			require.Equal(t, a.Name, b.Name)
			require.Equal(t, a.DType, b.DType)
			require.Equal(t, a.Begin, b.Begin)
			require.Equal(t, a.End, b.End)
			require.Equal(t, len(a.Shape), len(b.Shape))
			for j := range a.Shape {
				require.Equal(t, a.Shape[j], b.Shape[j])
			}
		}
		require.Equal(t, len(h.Metadata), len(h2.Metadata))
		for k, v := range h.Metadata {
			require.Equal(t, v, h2.Metadata[k])
		}
		checkAgainstReference(t, h, file)
	})
}
