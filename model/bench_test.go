package model

import (
	"fmt"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/stretchr/testify/require"
)

// BenchmarkForwardStories measures stories260K, float32 and quantized
// (default policy: int8 attention and MLP), as a prefill of 256 tokens in
// one call and as 256 single-token decode steps through the cache, for a
// batch of 1 and of 8. tokens/s counts every sequence of the batch.
func BenchmarkForwardStories(b *testing.B) {
	tokens, _ := storiesReference(b)
	for _, prec := range []string{"f32", "int8"} {
		path := storiesDir
		if prec == "int8" {
			path = quantizeTo(b, storiesDir, 0)
		}
		m, err := Load(path, cpu.New(0))
		require.NoError(b, err)
		for _, batch := range []int{1, 8} {
			seqs := make([][]int, batch)
			for i := range seqs {
				seqs[i] = tokens
			}
			b.Run(fmt.Sprintf("%s/prefill-256/batch-%d", prec, batch), func(b *testing.B) {
				b.ReportAllocs()
				s := m.NewSession(batch, len(tokens))
				for b.Loop() {
					s.Reset()
					if _, err := s.Forward(seqs, nil); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch*len(tokens))/b.Elapsed().Seconds(), "tokens/s")
			})
			b.Run(fmt.Sprintf("%s/decode-256/batch-%d", prec, batch), func(b *testing.B) {
				b.ReportAllocs()
				s := m.NewSession(batch, len(tokens))
				step := make([][]int, batch)
				for b.Loop() {
					s.Reset()
					for p := range tokens {
						for i := range step {
							step[i] = seqs[i][p : p+1]
						}
						if _, err := s.Forward(step, nil); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.N*batch*len(tokens))/b.Elapsed().Seconds(), "tokens/s")
			})
		}
		m.Close()
	}
}
