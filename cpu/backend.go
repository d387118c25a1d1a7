package cpu

import (
	"fmt"
	"runtime"

	"github.com/mixq/mixq/internal/par"
	"github.com/mixq/mixq/quant"
)

// defaultGrain is the least number of elements worth handing to one
// goroutine: starting one costs about a microsecond, this much work tens of
// microseconds. Smaller tensors run inline on the calling goroutine.
const defaultGrain = 1 << 15

// Backend is the reference implementation of quant.Backend.
type Backend struct {
	threads int
	grain   int
	simd    bool   // QuantizeGroups and Dequantize may use the vector kernels (haveSIMD)
	mm      *mmISA // MatMul's vector kernels (matmul_simd.go); nil: the plain-Go loops
}

var _ quant.Backend = (*Backend)(nil)

// New returns a CPU backend that splits large kernels over up to threads
// goroutines; threads <= 0 means runtime.GOMAXPROCS(0). The results do not
// depend on threads.
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	b := &Backend{threads: threads, grain: defaultGrain, simd: haveSIMD}
	if len(mmKernels) > 0 {
		b.mm = mmKernels[0]
	}
	return b
}

// Reference returns the single-threaded backend that never uses vector
// kernels: the plain-Go loops every other path (AVX2, AVX-512, CUDA) is
// checked against bit for bit.
func Reference() *Backend {
	b := New(1)
	b.simd, b.mm = false, nil
	return b
}

// MatMulKernels names the kernels MatMul uses: "avx512", "avx2", or "go"
// for the plain-Go loops (other architectures, the purego build tag, or a
// CPU without AVX2 and F16C).
func (b *Backend) MatMulKernels() string {
	if b.mm == nil {
		return "go"
	}
	return b.mm.name
}

// Name returns "cpu".
func (b *Backend) Name() string { return "cpu" }

// Threads is the largest number of goroutines one call uses.
func (b *Backend) Threads() int { return b.threads }

// chunks is the number of pieces to cut units of work into, given the total
// number of elements the kernel touches.
func (b *Backend) chunks(units, elements int) int {
	c := min(b.threads, elements/b.grain, units)
	return max(c, 1)
}

// parallel is par.Split: the CPU kernels cut their loops on group or row
// boundaries given by align.
var parallel = par.Split

// nonNil turns a nil slice into an empty one, so that Layout.CheckBuffers
// (which skips nil buffers) reports a missing buffer as a length mismatch.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func checkLayout(op string, l quant.Layout, w []float32, packed []byte, scales []uint16) error {
	if err := l.CheckBuffers(w, packed, scales); err != nil {
		return fmt.Errorf("cpu: %s: %w", op, err)
	}
	return nil
}
