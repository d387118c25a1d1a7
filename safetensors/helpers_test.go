package safetensors

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// rawFile assembles a file from a literal header (unpadded) and dataLen
// zero bytes of data, for building files the Writer would refuse to write.
func rawFile(header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// sampleSpecs covers every dtype, a scalar, zero-element tensors (one
// between two non-empty ones, one at the very end), a name needing JSON
// escapes and one with HTML-special characters.
func sampleSpecs() []Spec {
	return []Spec{
		{Name: "model.embed_tokens.weight", DType: F32, Shape: []int64{7, 5}},
		{Name: "half", DType: F16, Shape: []int64{3, 3}},
		{Name: "empty.between", DType: F32, Shape: []int64{4, 0, 2}},
		{Name: "brain", DType: BF16, Shape: []int64{9}},
		{Name: "scalar", DType: F64, Shape: []int64{}},
		{Name: "i8", DType: I8, Shape: []int64{5}},
		{Name: "u8", DType: U8, Shape: []int64{1, 1, 3}},
		{Name: "i16", DType: I16, Shape: []int64{2}},
		{Name: "u16", DType: U16, Shape: []int64{2}},
		{Name: "i32", DType: I32, Shape: []int64{3}},
		{Name: "u32", DType: U32, Shape: []int64{3}},
		{Name: "i64", DType: I64, Shape: []int64{1}},
		{Name: "u64", DType: U64, Shape: []int64{1}},
		{Name: "mask", DType: BOOL, Shape: []int64{3}},
		{Name: "e4m3", DType: F8E4M3, Shape: []int64{4}},
		{Name: "e5m2", DType: F8E5M2, Shape: []int64{4}},
		{Name: "quote\"back\\slash\ttab\u00e9<&>", DType: F32, Shape: []int64{2}},
		{Name: "empty.last", DType: BF16, Shape: []int64{0}},
	}
}

var sampleMetadata = map[string]string{"format": "pt", "z": "last", "a": "first \"quoted\" <html>", "": "empty key"}

// randomData returns reproducible contents for each spec.
func randomData(seed uint64, specs []Spec) [][]byte {
	r := rand.New(rand.NewPCG(seed, 0))
	out := make([][]byte, len(specs))
	for i, s := range specs {
		b := make([]byte, s.Bytes())
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		out[i] = b
	}
	return out
}

// writeFile writes specs with the Writer, each tensor in chunks of at most
// chunk bytes, and returns the path.
func writeFile(t testing.TB, dir string, specs []Spec, meta map[string]string, data [][]byte, chunk int) string {
	t.Helper()
	path := filepath.Join(dir, "model.safetensors")
	w, err := Create(path, specs, meta)
	require.NoError(t, err)
	for i, s := range specs {
		d := data[i]
		for len(d) > chunk {
			require.NoError(t, w.Write(s.Name, d[:chunk]))
			d = d[chunk:]
		}
		require.NoError(t, w.Write(s.Name, d))
	}
	require.NoError(t, w.Close())
	return path
}

// encodeFile is the whole file as bytes, via EncodeHeader.
func encodeFile(t testing.TB, specs []Spec, meta map[string]string, data [][]byte) []byte {
	t.Helper()
	prefix, err := EncodeHeader(specs, meta)
	require.NoError(t, err)
	return append(prefix, bytes.Join(data, nil)...)
}

// dirEntries lists the names in dir, to prove no temporary file is left.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
