package safetensors

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	specs := sampleSpecs()
	data := randomData(1, specs)
	for _, chunk := range []int{1, 3, 8, 1 << 20} {
		dir := t.TempDir()
		path := writeFile(t, dir, specs, sampleMetadata, data, chunk)
		assert.Equal(t, []string{"model.safetensors"}, dirEntries(t, dir), "only the final file remains")

		st, err := os.Stat(path)
		require.NoError(t, err)
		size, err := FileSize(specs, sampleMetadata)
		require.NoError(t, err)
		assert.Equal(t, size, st.Size(), "FileSize predicts the written size")

		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, encodeFile(t, specs, sampleMetadata, data), raw, "file is the encoded header followed by the data")

		f, err := Open(path)
		require.NoError(t, err)
		h := f.Header()
		assert.Equal(t, path, f.Path())
		assert.Zero(t, h.DataStart%8, "data buffer is 8-byte aligned")
		assert.Equal(t, sampleMetadata, h.Metadata)
		require.Len(t, h.Tensors, len(specs))
		for i, s := range specs {
			info, ok := h.Lookup(s.Name)
			require.True(t, ok, s.Name)
			assert.Equal(t, s.DType, info.DType, s.Name)
			assert.Equal(t, s.Shape, info.Shape, s.Name)
			assert.Equal(t, s.Bytes(), info.End-info.Begin, s.Name)
			assert.Equal(t, info.NumElements()*int64(s.DType.Size()), s.Bytes(), s.Name)
			assert.True(t, bytes.Equal(data[i], f.Data(info)), "data of %s", s.Name)
		}
		_, ok := h.Lookup("missing")
		assert.False(t, ok)
		require.NoError(t, f.Close())
		require.NoError(t, f.Close(), "Close twice is harmless")
	}
}

func TestEncodeHeaderFormat(t *testing.T) {
	specs := []Spec{
		{Name: "b", DType: F32, Shape: []int64{2, 3}},
		{Name: "a<", DType: F16, Shape: []int64{}},
	}
	got, err := EncodeHeader(specs, map[string]string{"y": "2", "x": "1"})
	require.NoError(t, err)
	json := `{"__metadata__":{"x":"1","y":"2"},"b":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"a<":{"dtype":"F16","shape":[],"data_offsets":[24,26]}}`
	n := binary.LittleEndian.Uint64(got)
	assert.Equal(t, uint64(len(got)-8), n)
	assert.Zero(t, len(got)%8)
	assert.Equal(t, json, string(bytes.TrimRight(got[8:], " ")), "compact, metadata first and sorted, declared order")
	assert.Less(t, len(got)-8-len(json), 8, "at most 7 bytes of padding")

	again, err := EncodeHeader(specs, map[string]string{"x": "1", "y": "2"})
	require.NoError(t, err)
	assert.Equal(t, got, again, "deterministic")

	none, err := EncodeHeader(nil, nil)
	require.NoError(t, err)
	assert.Equal(t, "{}      ", string(none[8:]), "empty metadata is omitted")
}

func TestEncodeHeaderRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []Spec
		meta  map[string]string
		want  string
	}{
		{"unknown dtype", []Spec{{Name: "w", DType: "F7", Shape: []int64{1}}}, nil, `tensor "w": dtype "F7" shape [1]: unknown dtype`},
		{"negative dim", []Spec{{Name: "w", DType: F32, Shape: []int64{-1}}}, nil, "negative dimension"},
		{"overflow", []Spec{{Name: "w", DType: F32, Shape: []int64{1 << 40, 1 << 40}}}, nil, "overflows"},
		{"duplicate", []Spec{{Name: "w", DType: F32}, {Name: "w", DType: F32}}, nil, `tensor "w" declared twice`},
		{"reserved", []Spec{{Name: "__metadata__", DType: F32}}, nil, "reserved"},
		{"bad utf8 name", []Spec{{Name: "w\xff", DType: F32}}, nil, "not valid UTF-8"},
		{"bad utf8 metadata", nil, map[string]string{"k": "\xff"}, "not valid UTF-8"},
		{"total overflow", []Spec{{Name: "a", DType: U8, Shape: []int64{1 << 62}}, {Name: "b", DType: U8, Shape: []int64{1 << 62}}}, nil, "total data size overflows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EncodeHeader(tc.specs, tc.meta)
			require.ErrorContains(t, err, tc.want)
			_, err = FileSize(tc.specs, tc.meta)
			require.ErrorContains(t, err, tc.want)
			dir := t.TempDir()
			_, err = Create(filepath.Join(dir, "x.safetensors"), tc.specs, tc.meta)
			require.ErrorContains(t, err, tc.want)
			assert.Empty(t, dirEntries(t, dir))
		})
	}
	assert.Equal(t, int64(-1), Spec{DType: "nope", Shape: []int64{1}}.Bytes())
	assert.Equal(t, int64(0), Spec{DType: F32, Shape: []int64{1 << 62, 0}}.Bytes(), "a zero dimension wins over a large product")
}

func TestWriterChunked(t *testing.T) {
	specs := []Spec{{Name: "big", DType: F32, Shape: []int64{1000}}, {Name: "small", DType: U8, Shape: []int64{3}}}
	data := randomData(2, specs)
	dir := t.TempDir()
	path := filepath.Join(dir, "c.safetensors")
	w, err := Create(path, specs, nil)
	require.NoError(t, err)
	// Uneven chunks, including an empty one.
	require.NoError(t, w.Write("big", data[0][:1]))
	require.NoError(t, w.Write("big", nil))
	require.NoError(t, w.Write("big", data[0][1:2500]))
	require.NoError(t, w.Write("big", data[0][2500:]))
	require.NoError(t, w.Write("small", data[1]))
	require.NoError(t, w.Close())

	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	for i, s := range specs {
		info, ok := f.Header().Lookup(s.Name)
		require.True(t, ok)
		assert.Equal(t, data[i], f.Data(info))
	}
}

func TestWriterZeroByteTensorsNeedNoWrite(t *testing.T) {
	specs := []Spec{
		{Name: "z0", DType: F32, Shape: []int64{0}},
		{Name: "a", DType: U8, Shape: []int64{2}},
		{Name: "z1", DType: F32, Shape: []int64{3, 0}},
		{Name: "z2", DType: F32, Shape: []int64{0}},
		{Name: "b", DType: U8, Shape: []int64{1}},
		{Name: "z3", DType: F32, Shape: []int64{0}},
	}
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "z.safetensors"), specs, nil)
	require.NoError(t, err)
	require.NoError(t, w.Write("a", []byte{1, 2}))
	require.NoError(t, w.Write("z2", nil), "an explicit empty write to a zero-byte tensor is fine too")
	require.NoError(t, w.Write("b", []byte{3}))
	require.NoError(t, w.Close())
	f, err := Open(filepath.Join(dir, "z.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	assert.Len(t, f.Header().Tensors, 6)
}

func TestWriterErrors(t *testing.T) {
	specs := []Spec{
		{Name: "a", DType: U8, Shape: []int64{4}},
		{Name: "b", DType: U8, Shape: []int64{2}},
		{Name: "c", DType: U8, Shape: []int64{1}},
	}
	for _, tc := range []struct {
		name  string
		steps func(w *Writer) error
		want  string
	}{
		{"out of order", func(w *Writer) error { return w.Write("b", []byte{1}) },
			`tensor "b" written before "a" was complete (0 of 4 bytes)`},
		{"before previous complete", func(w *Writer) error {
			_ = w.Write("a", []byte{1, 2})
			return w.Write("b", []byte{1})
		}, `tensor "b" written before "a" was complete (2 of 4 bytes)`},
		{"skipping a tensor", func(w *Writer) error {
			_ = w.Write("a", []byte{1, 2, 3, 4})
			return w.Write("c", []byte{1})
		}, `"b" is declared before it and was not written`},
		{"going back", func(w *Writer) error {
			_ = w.Write("a", []byte{1, 2, 3, 4})
			_ = w.Write("b", []byte{1})
			return w.Write("a", nil)
		}, `tensor "a" written out of order: it is declared before "b"`},
		{"too long in one write", func(w *Writer) error { return w.Write("a", make([]byte, 5)) },
			`tensor "a": writing 5 more bytes after 0 exceeds its 4 bytes`},
		{"too long over chunks", func(w *Writer) error {
			_ = w.Write("a", make([]byte, 3))
			return w.Write("a", make([]byte, 2))
		}, `writing 2 more bytes after 3 exceeds its 4 bytes`},
		{"undeclared", func(w *Writer) error { return w.Write("zz", nil) }, `tensor "zz" was not declared`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "e.safetensors")
			w, err := Create(path, specs, nil)
			require.NoError(t, err)
			err = tc.steps(w)
			require.ErrorContains(t, err, tc.want)
			// The error sticks: later writes and Close report it, and
			// Close cleans up.
			require.ErrorContains(t, w.Write("a", nil), tc.want)
			require.ErrorContains(t, w.Close(), tc.want)
			assert.Empty(t, dirEntries(t, dir), "no file and no temp file")
			w.Abort()
		})
	}
}

func TestWriterIncompleteClose(t *testing.T) {
	specs := []Spec{{Name: "a", DType: U8, Shape: []int64{4}}, {Name: "b", DType: U8, Shape: []int64{2}}}
	for _, tc := range []struct {
		name  string
		write func(w *Writer)
		want  string
	}{
		{"nothing written", func(w *Writer) {}, `tensor "a" incomplete: 0 of 4 bytes written`},
		{"partial tensor", func(w *Writer) { _ = w.Write("a", []byte{1}) }, `tensor "a" incomplete: 1 of 4 bytes written`},
		{"missing last", func(w *Writer) { _ = w.Write("a", []byte{1, 2, 3, 4}) }, `tensor "b" incomplete: 0 of 2 bytes written`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "i.safetensors")
			w, err := Create(path, specs, nil)
			require.NoError(t, err)
			tc.write(w)
			require.ErrorContains(t, w.Close(), tc.want)
			assert.Empty(t, dirEntries(t, dir))
		})
	}
}

func TestWriterAtomicity(t *testing.T) {
	specs := []Spec{{Name: "a", DType: U8, Shape: []int64{4}}}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.safetensors")

	// While writing, only the temporary file exists, named after the target.
	w, err := Create(path, specs, nil)
	require.NoError(t, err)
	names := dirEntries(t, dir)
	require.Len(t, names, 1)
	assert.Regexp(t, `^\.a\.safetensors\.mixq-tmp-[0-9]+-[0-9]+$`, names[0], "hidden, with the owner's pid")
	require.NoError(t, w.Write("a", []byte{1, 2}))
	w.Abort()
	w.Abort() // twice is fine
	assert.Empty(t, dirEntries(t, dir), "abort leaves nothing")
	require.Error(t, w.Write("a", []byte{3, 4}), "aborted writer refuses writes")
	require.Error(t, w.Close(), "aborted writer cannot be closed into place")
	assert.Empty(t, dirEntries(t, dir))

	// An existing file survives a failed rewrite untouched.
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	w, err = Create(path, specs, nil)
	require.NoError(t, err)
	require.Error(t, w.Close())
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "old", string(got))
	assert.Equal(t, []string{"a.safetensors"}, dirEntries(t, dir))

	// A successful Close replaces it, and Abort afterwards is a no-op.
	w, err = Create(path, specs, nil)
	require.NoError(t, err)
	require.NoError(t, w.Write("a", []byte{1, 2, 3, 4}))
	require.NoError(t, w.Close())
	w.Abort()
	assert.Equal(t, []string{"a.safetensors"}, dirEntries(t, dir))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	require.Error(t, w.Close(), "closing twice is an error")

	// A failure to create the temporary file leaves nothing either.
	_, err = Create(filepath.Join(path, "x.safetensors"), specs, nil)
	require.Error(t, err, "a regular file where the directory should be")
}

func TestReleaseKeepsDataReadable(t *testing.T) {
	page := os.Getpagesize()
	specs := []Spec{
		{Name: "head", DType: U8, Shape: []int64{3}},
		{Name: "big", DType: F32, Shape: []int64{int64(3 * page)}},
		{Name: "tiny", DType: U8, Shape: []int64{5}},
		{Name: "none", DType: U8, Shape: []int64{0}},
	}
	data := randomData(3, specs)
	path := writeFile(t, t.TempDir(), specs, nil, data, 1<<20)
	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	for i, s := range specs {
		info, _ := f.Header().Lookup(s.Name)
		require.Equal(t, data[i], f.Data(info))
		f.Release(info)
		// The pages come back from the file on the next access.
		require.Equal(t, data[i], f.Data(info), s.Name)
	}
	require.NoError(t, f.Close())
	info, _ := f.Header().Lookup("big")
	f.Release(info) // after Close: no-op, no crash
}

func TestOpenEmptyDataBuffer(t *testing.T) {
	path := writeFile(t, t.TempDir(), []Spec{{Name: "z", DType: F32, Shape: []int64{0}}}, map[string]string{"k": "v"}, [][]byte{nil}, 1)
	f, err := Open(path)
	require.NoError(t, err)
	info, ok := f.Header().Lookup("z")
	require.True(t, ok)
	assert.Empty(t, f.Data(info))
	f.Release(info)
	require.NoError(t, f.Close())
}
