package gguf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every value type written comes back equal, tensors land on aligned
// offsets, and the file is exactly Layout.Size bytes.
func TestRoundTrip(t *testing.T) {
	kvs := []KV{
		{"general.architecture", "llama"},
		{"u8", uint8(7)}, {"i8", int8(-7)}, {"u16", uint16(65535)}, {"i16", int16(-300)},
		{"u32", uint32(1 << 31)}, {"i32", int32(-5)}, {"f32", float32(1.5)}, {"b", true},
		{"u64", uint64(1 << 40)}, {"i64", int64(-1 << 40)}, {"f64", 2.25},
		{"strs", []string{"a", "", "ünï"}}, {"f32s", []float32{-1, 0.5}}, {"i32s", []int32{1, -2, 3}},
		{"bools", []bool{true, false}},
	}
	tensors := []TensorInfo{
		{Name: "a", Dims: []uint64{3}, Type: F32},          // 12 bytes: padded to 32
		{Name: "q4", Dims: []uint64{64, 2}, Type: Q4_0},    // 2 rows × 2 blocks × 18
		{Name: "q8", Dims: []uint64{32, 3, 2}, Type: Q8_0}, // 6 blocks × 34
		{Name: "h", Dims: []uint64{5}, Type: F16},          // 10 bytes, last
	}
	l, err := NewLayout(kvs, tensors)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "x.gguf")
	w, err := Create(path, l)
	require.NoError(t, err)
	var want [][]byte
	for i := range l.Tensors {
		b := bytes.Repeat([]byte{byte(i + 1)}, int(l.TensorBytes(i)))
		want = append(want, b)
		// Split writes across tensor boundaries to exercise the padding.
		_, err := w.Write(b[:len(b)/2])
		require.NoError(t, err)
		_, err = w.Write(b[len(b)/2:])
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, l.Size, st.Size())

	g, err := Open(path)
	require.NoError(t, err)
	defer g.Close()
	assert.Equal(t, uint32(3), g.Version)
	require.Len(t, g.KVs, len(kvs))
	for i, kv := range kvs {
		assert.Equal(t, kv, g.KVs[i])
	}
	assert.Equal(t, []int64{12, 72, 204, 10}, []int64{l.TensorBytes(0), l.TensorBytes(1), l.TensorBytes(2), l.TensorBytes(3)})
	for i, ti := range g.Tensors {
		assert.Equal(t, tensors[i].Name, ti.Name)
		assert.Equal(t, tensors[i].Dims, ti.Dims)
		assert.Zero(t, ti.Offset%DefaultAlignment, "offset of %s", ti.Name)
		b, err := g.ReadTensor(ti)
		require.NoError(t, err)
		assert.Equal(t, want[i], b, ti.Name)
	}
	assert.Equal(t, l.DataOffset, g.DataOffset)
}

// Q4_0 puts element i in the low nibble of byte i and element i+16 in the
// high nibble (ggml's block_q4_0), each as code + 8; Q8_0 stores codes as
// they are after the f16 scale.
func TestBlocks(t *testing.T) {
	codes := make([]int8, QK)
	for i := range codes {
		codes[i] = int8(i%15) - 7
	}
	b := make([]byte, 2+QK/2)
	PutQ4_0(b, 0x3c00, codes)
	assert.Equal(t, uint16(0x3c00), binary.LittleEndian.Uint16(b))
	for i := 0; i < QK/2; i++ {
		assert.Equal(t, byte(codes[i]+8), b[2+i]&0x0f, "low nibble %d", i)
		assert.Equal(t, byte(codes[i+16]+8), b[2+i]>>4, "high nibble %d", i)
	}
	// A worked block: codes -7..7 then 8 zeros... as bytes.
	w := []int8{-7, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -8}
	PutQ4_0(b, 0, w)
	assert.Equal(t, []byte{0xb1, 0x79, 0x88, 0x8f}, b[2:6], "(3+8)<<4|(-7+8), (-1+8)<<4|(1+8), ...")
	assert.Equal(t, byte(0x08), b[2+15], "element 31 is -8: nibble 0 high, element 15 is 0: nibble 8 low")

	q8 := make([]byte, 2+QK)
	PutQ8_0(q8, 0x1234, codes)
	assert.Equal(t, []byte{0x34, 0x12}, q8[:2])
	for i, c := range codes {
		assert.Equal(t, byte(c), q8[2+i])
	}
}

// A writer that does not get all its data, or is aborted, leaves nothing:
// neither the target nor a temporary file.
func TestNoPartialFile(t *testing.T) {
	l, err := NewLayout([]KV{{"k", "v"}}, []TensorInfo{{Name: "a", Dims: []uint64{8}, Type: F32}})
	require.NoError(t, err)
	dir := t.TempDir()
	path := filepath.Join(dir, "x.gguf")
	w, err := Create(path, l)
	require.NoError(t, err)
	_, err = w.Write(make([]byte, 16))
	require.NoError(t, err)
	assert.ErrorContains(t, w.Close(), "incomplete")
	w2, err := Create(path, l)
	require.NoError(t, err)
	_, err = w2.Write(make([]byte, 40))
	assert.ErrorContains(t, err, "more data")
	w2.Abort()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, ents)
}

func TestLayoutErrors(t *testing.T) {
	_, err := NewLayout(nil, []TensorInfo{{Name: "a", Dims: []uint64{33, 2}, Type: Q8_0}})
	assert.ErrorContains(t, err, "multiple of 32")
	_, err = NewLayout([]KV{{"a", 1}, {"a", 2}}, nil)
	assert.ErrorContains(t, err, "twice")
	_, err = NewLayout([]KV{{"x", struct{}{}}}, nil)
	assert.ErrorContains(t, err, "unsupported")
}

func TestOpenRejectsGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.gguf")
	require.NoError(t, os.WriteFile(p, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"), 0o644))
	_, err := Open(p)
	assert.ErrorContains(t, err, p)
	require.NoError(t, os.WriteFile(p, []byte("hello world, this is not a gguf file at all"), 0o644))
	_, err = Open(p)
	assert.ErrorContains(t, err, "magic")
}
