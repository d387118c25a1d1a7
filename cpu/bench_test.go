package cpu_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// The benchmarks report MB/s of the input each kernel streams (SetBytes), so
// that they read against BenchmarkMemcpy over the same sizes on the same run.

var benchShapes = []struct{ rows, cols int }{{4096, 4096}, {11008, 4096}}

func benchWeights(n int) []float32 {
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.02)
	}
	return w
}

// BenchmarkMemcpy is the baseline: copying a float32 buffer of each shape
// (SetBytes = bytes copied), and of the packed codes.
func BenchmarkMemcpy(b *testing.B) {
	for _, sh := range benchShapes {
		n := sh.rows * sh.cols
		src, dst := benchWeights(n), benchWeights(n) // touched, so not the shared zero page
		b.Run(fmt.Sprintf("%dx%d", sh.rows, sh.cols), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

// BenchmarkQuantize is GroupScales followed by Quantize, group size 128
// (SetBytes = input float32 bytes), and the fused QuantizeGroups.
func BenchmarkQuantize(b *testing.B) {
	be := cpu.New(0)
	for _, sh := range benchShapes {
		w := benchWeights(sh.rows * sh.cols)
		for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
			l := quant.Layout{Rows: sh.rows, Cols: sh.cols, GroupSize: 128, Precision: p}
			scales := make([]uint16, l.NumScales())
			packed := make([]byte, l.PackedBytes())
			b.Run(fmt.Sprintf("%s/%dx%d", p, sh.rows, sh.cols), func(b *testing.B) {
				b.SetBytes(int64(4 * len(w)))
				b.ReportAllocs()
				for b.Loop() {
					if err := be.GroupScales(scales, w, l); err != nil {
						b.Fatal(err)
					}
					if err := be.Quantize(packed, w, scales, l); err != nil {
						b.Fatal(err)
					}
				}
			})
			// The same work in one pass over w (cpu-only QuantizeGroups).
			b.Run(fmt.Sprintf("%s/%dx%d/fused", p, sh.rows, sh.cols), func(b *testing.B) {
				b.SetBytes(int64(4 * len(w)))
				b.ReportAllocs()
				for b.Loop() {
					if err := be.QuantizeGroups(packed, scales, w, l); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkGroupScales and BenchmarkEncode split BenchmarkQuantize in its two passes.
func BenchmarkGroupScales(b *testing.B) {
	be := cpu.New(0)
	sh := benchShapes[0]
	w := benchWeights(sh.rows * sh.cols)
	l := quant.Layout{Rows: sh.rows, Cols: sh.cols, GroupSize: 128, Precision: quant.INT8}
	scales := make([]uint16, l.NumScales())
	b.SetBytes(int64(4 * len(w)))
	b.ReportAllocs()
	for b.Loop() {
		if err := be.GroupScales(scales, w, l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	be := cpu.New(0)
	sh := benchShapes[0]
	w := benchWeights(sh.rows * sh.cols)
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		l := quant.Layout{Rows: sh.rows, Cols: sh.cols, GroupSize: 128, Precision: p}
		scales := make([]uint16, l.NumScales())
		packed := make([]byte, l.PackedBytes())
		if err := be.GroupScales(scales, w, l); err != nil {
			b.Fatal(err)
		}
		b.Run(p.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(w)))
			b.ReportAllocs()
			for b.Loop() {
				if err := be.Quantize(packed, w, scales, l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDequantize expands the codes to float32 (SetBytes = output float32 bytes).
func BenchmarkDequantize(b *testing.B) {
	be := cpu.New(0)
	for _, sh := range benchShapes {
		w := benchWeights(sh.rows * sh.cols)
		for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
			l := quant.Layout{Rows: sh.rows, Cols: sh.cols, GroupSize: 128, Precision: p}
			scales := make([]uint16, l.NumScales())
			packed := make([]byte, l.PackedBytes())
			if err := be.GroupScales(scales, w, l); err != nil {
				b.Fatal(err)
			}
			if err := be.Quantize(packed, w, scales, l); err != nil {
				b.Fatal(err)
			}
			out := make([]float32, len(w))
			b.Run(fmt.Sprintf("%s/%dx%d", p, sh.rows, sh.cols), func(b *testing.B) {
				b.SetBytes(int64(4 * len(w)))
				b.ReportAllocs()
				for b.Loop() {
					if err := be.Dequantize(out, packed, scales, l); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkMatMul is y = x·Wᵀ on a 4096×4096 W (SetBytes = packed + scale
// bytes) with every MatMul kernel set of this machine: the plain-Go
// reference ("go"), AVX2 and AVX-512.
func BenchmarkMatMul(b *testing.B) {
	for _, kn := range []string{"avx512", "avx2", "go"} {
		be, ok := cpu.New(0).WithMatMul(kn)
		if !ok {
			continue
		}
		b.Run(kn, func(b *testing.B) { benchMatMul(b, be) })
	}
}

func benchMatMul(b *testing.B, be *cpu.Backend) {
	const rows, cols = 4096, 4096
	w := benchWeights(rows * cols)
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		l := quant.Layout{Rows: rows, Cols: cols, GroupSize: 128, Precision: p}
		scales := make([]uint16, l.NumScales())
		packed := make([]byte, l.PackedBytes())
		if err := be.GroupScales(scales, w, l); err != nil {
			b.Fatal(err)
		}
		if err := be.Quantize(packed, w, scales, l); err != nil {
			b.Fatal(err)
		}
		for _, m := range []int{1, 16} {
			x := benchWeights(m * cols)
			y := make([]float32, m*rows)
			b.Run(fmt.Sprintf("%s/m=%d", p, m), func(b *testing.B) {
				b.SetBytes(int64(len(packed) + 2*len(scales)))
				b.ReportAllocs()
				for b.Loop() {
					if err := be.MatMul(y, x, m, packed, scales, l); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkChannelStats is one batch of 4096 tokens × 4096 channels
// (SetBytes = input float32 bytes).
func BenchmarkChannelStats(b *testing.B) {
	be := cpu.New(0)
	const tokens, channels = 4096, 4096
	x := benchWeights(tokens * channels)
	s := quant.NewStats(channels)
	b.SetBytes(int64(4 * len(x)))
	b.ReportAllocs()
	for b.Loop() {
		if err := be.ChannelStats(s, x, tokens); err != nil {
			b.Fatal(err)
		}
	}
}
