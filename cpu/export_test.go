package cpu

import "unsafe"

// NewGrain is New with the least number of elements per goroutine set to
// grain, so that tests can make even tiny tensors split into many chunks.
func NewGrain(threads, grain int) *Backend {
	b := New(threads)
	b.grain = max(grain, 1)
	return b
}

// Generic returns a copy of b that never uses the vector kernels, so that
// tests run the plain-Go paths of QuantizeGroups and Dequantize on any
// machine.
func (b *Backend) Generic() *Backend {
	c := *b
	c.simd = false
	c.mm = nil
	return &c
}

// SIMD reports whether b's QuantizeGroups and Dequantize use the vector kernels.
func (b *Backend) SIMD() bool { return b.simd }

// SIMDName names the vector kernels of this build ("avx2", or "none").
const SIMDName = simdName

// ScalesSIMD is the scale kernel: bits[k], inv[k] = ScaleBits(amax, qmax),
// Reciprocal(bits[k]) for every finite amax = Float32frombits(m[k]), with
// any qmax; len(m) is a multiple of 8. It panics without vector kernels.
func ScalesSIMD(bits []uint16, inv []float32, m []uint32, qmax float32) {
	scalesGroups(bits, inv, m, qmax)
}

// WithMatMul returns a copy of b whose MatMul uses the named kernels
// ("avx512", "avx2", "go"), and false when this CPU or build has none such.
func (b *Backend) WithMatMul(name string) (*Backend, bool) {
	c := *b
	if name == "go" {
		c.mm = nil
		return &c, true
	}
	for _, k := range mmKernels {
		if k.name == name {
			c.mm = k
			return &c, true
		}
	}
	return nil, false
}

// MatMulChunk is the most columns the vector MatMul transposes at once.
const MatMulChunk = mmChunk

// MMArgsOffsets are the byte offsets of mmArgs' fields that the assembly
// reads (gen/matmul_asm.py): t, sc, x, acc, cols, gs, lane, scOf, pf, pfSt.
var MMArgsOffsets = func() []uintptr {
	var a mmArgs
	return []uintptr{unsafe.Offsetof(a.t), unsafe.Offsetof(a.sc), unsafe.Offsetof(a.x), unsafe.Offsetof(a.acc),
		unsafe.Offsetof(a.cols), unsafe.Offsetof(a.gs), unsafe.Offsetof(a.lane), unsafe.Offsetof(a.scOf),
		unsafe.Offsetof(a.pf), unsafe.Offsetof(a.pfSt)}
}()
