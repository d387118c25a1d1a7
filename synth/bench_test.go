package synth

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mixq/mixq/safetensors"
)

var benchSizes = []int{4 << 10, 64 << 10, chunkElems}

// BenchmarkFill measures the draw (Fill), the weights of a matrix
// (FillTensor), the BF16 conversion, and a copy of the same bytes as the
// memory baseline. Bytes are the float32 output.
func BenchmarkFill(b *testing.B) {
	for _, n := range benchSizes {
		src := make([]float32, n)
		dst := make([]float32, n)
		out := make([]byte, 2*n)
		spec := safetensors.Spec{Name: "model.layers.0.mlp.up_proj.weight", Shape: []int64{int64(n) / 4096, 4096}}
		run := func(name string, f func(i int)) {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				b.SetBytes(int64(4 * n))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					f(i)
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
			})
		}
		run("copy", func(int) { copy(dst, src) })
		run("fill", func(i int) { Fill(dst, "w", 1, int64(i)*int64(n)) })
		run("tensor", func(i int) { FillTensor(dst, spec, 1, 0) })
		run("bf16", func(int) { encode(out, src, safetensors.BF16) })
	}
}

// BenchmarkFillParallel runs Fill on every GOMAXPROCS goroutine on disjoint
// chunks, as Write does: the aggregate generation rate.
func BenchmarkFillParallel(b *testing.B) {
	b.SetBytes(4 * chunkElems)
	b.ReportAllocs()
	var mu sync.Mutex
	next := int64(0)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]float32, chunkElems)
		for pb.Next() {
			mu.Lock()
			off := next
			next += chunkElems
			mu.Unlock()
			Fill(dst, "w", 1, off)
		}
	})
	b.ReportMetric(float64(next)/time.Since(start).Seconds()/1e6, "Melem/s")
}

// BenchmarkWrite writes whole checkpoints in BF16 to a temporary
// directory: generation, conversion and the file system together.
func BenchmarkWrite(b *testing.B) {
	for _, name := range []string{"tiny-moe", "llama7b-layer"} {
		p, err := Lookup(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(2 * p.Parameters())
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := Write(filepath.Join(b.TempDir(), fmt.Sprint(i)), Options{Preset: p, Seed: 1}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p.Parameters())*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
		})
	}
}
