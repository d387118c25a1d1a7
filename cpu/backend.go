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
	simd    bool // QuantizeGroups and Dequantize may use the vector kernels (haveSIMD)
}

var _ quant.Backend = (*Backend)(nil)

// New returns a CPU backend that splits large kernels over up to threads
// goroutines; threads <= 0 means runtime.GOMAXPROCS(0). The results do not
// depend on threads.
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Backend{threads: threads, grain: defaultGrain, simd: haveSIMD}
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
