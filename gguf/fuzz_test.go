package gguf

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen: the reader (which reads --vocab-from files) returns an error
// or a consistent file for any bytes, never panics, and never allocates
// beyond what the file could hold.
func FuzzOpen(f *testing.F) {
	l, err := NewLayout([]KV{{"general.architecture", "llama"}, {"tokenizer.ggml.tokens", []string{"a", "b"}}, {"x", []int32{1, 2}}},
		[]TensorInfo{{Name: "t", Dims: []uint64{32, 2}, Type: Q8_0}})
	if err != nil {
		f.Fatal(err)
	}
	good := append([]byte(nil), l.Header()...)
	good = append(good, make([]byte, l.Size-int64(len(good)))...)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "f.gguf")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		g, err := Open(p)
		if err != nil {
			return
		}
		defer g.Close()
		for _, ti := range g.Tensors {
			if n, err := ti.Bytes(); err == nil && n < 1<<20 {
				_, _ = g.ReadTensor(ti)
			}
		}
	})
}
