package gptq

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// BenchmarkQuantize measures GPTQ (factorisations included) against the
// backend's absmax round to nearest on the same matrix; bytes are the
// binary32 weights read.
func BenchmarkQuantize(b *testing.B) {
	for _, s := range []struct{ rows, k int }{{256, 256}, {768, 256}, {256, 768}, {1024, 1024}} {
		rng := rand.New(rand.NewPCG(1, 1))
		x := make([]float32, 2*s.k*s.k)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		m := NewMoment(s.k)
		if err := m.Add(x, 2*s.k, 0); err != nil {
			b.Fatal(err)
		}
		h := m.Mean()
		w := make([]float32, s.rows*s.k)
		for i := range w {
			w[i] = float32(rng.NormFloat64())
		}
		l := quant.Layout{Rows: s.rows, Cols: s.k, GroupSize: 128, Precision: quant.INT4}
		name := fmt.Sprintf("%dx%d", s.rows, s.k)
		b.Run("gptq/"+name, func(b *testing.B) {
			b.SetBytes(int64(4 * len(w)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Quantize(w, l, h, int64(2*s.k), Options{Search: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("rtn/"+name, func(b *testing.B) {
			be := cpu.New(0)
			packed, scales := make([]byte, l.PackedBytes()), make([]uint16, l.NumScales())
			b.SetBytes(int64(4 * len(w)))
			for b.Loop() {
				if err := quant.QuantizeGroups(be, packed, scales, w, l); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuantize7BProjection is GPTQ on one Llama-7B attention
// projection (4096×4096, INT4 g128, searched scales), second moment from
// 8192 tokens included in the setup, not the timing. It takes minutes:
// run it alone (-bench Quantize7B).
func BenchmarkQuantize7BProjection(b *testing.B) {
	const k, tokens = 4096, 8192
	rng := rand.New(rand.NewPCG(2, 2))
	m := NewMoment(k)
	x := make([]float32, 64*k)
	for t0 := 0; t0 < tokens; t0 += 64 {
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		if err := m.Add(x, 64, 0); err != nil {
			b.Fatal(err)
		}
	}
	h := m.Mean()
	w := make([]float32, k*k)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.02)
	}
	l := quant.Layout{Rows: k, Cols: k, GroupSize: 128, Precision: quant.INT4}
	b.SetBytes(int64(4 * len(w)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Quantize(w, l, h, tokens, Options{Search: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFactor times the factorisation (Cholesky, inverse, U) of a
// damped H at K = 1024: the packed, blocked code against the dense
// column by column loops it replaced (denseUpperInverseFactor, the same
// bits), one goroutine each, so the ratio is the blocking's alone.
func BenchmarkFactor(b *testing.B) {
	const k = 1024
	rng := rand.New(rand.NewPCG(3, 3))
	x := make([]float32, 2*k*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	m := NewMoment(k)
	if err := m.Add(x, 2*k, 0); err != nil {
		b.Fatal(err)
	}
	h := m.Mean()
	b.Run("dense", func(b *testing.B) {
		a := make([]float64, k*k)
		for b.Loop() {
			for i := range k {
				for j := range k {
					a[(k-1-i)*k+(k-1-j)] = h[i*k+j]
				}
				a[(k-1-i)*k+(k-1-i)] += 0.01
			}
			if _, ok := denseUpperInverseFactor(a, k); !ok {
				b.Fatal("not definite")
			}
		}
	})
	b.Run("packed", func(b *testing.B) {
		for b.Loop() {
			s, err := SymFromDense(h, k)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := NewFactor(context.Background(), s, 2*k, Options{Workers: 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
