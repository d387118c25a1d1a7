// Package par splits a range of work over goroutines. It is shared by the
// CPU backend and the forward pass, which cut their loops the same way.
package par

import (
	"sync"

	"github.com/mixq/mixq/internal/fault"
)

// Split calls fn(c, lo, hi) for n contiguous chunks that cover [0, units),
// every boundary but the last being a multiple of align, concurrently, and
// returns when all are done. Chunk 0 runs on the calling goroutine, so n ≤ 1
// costs no goroutine at all. A chunk may be empty (lo == hi).
func Split(units, align, n int, fn func(c, lo, hi int)) {
	if n <= 1 {
		fn(0, 0, units)
		return
	}
	bound := func(c int) int {
		if c >= n {
			return units
		}
		return c * units / n / align * align
	}
	var wg sync.WaitGroup
	// Chunks often read mapped input files: a fault on a worker would kill
	// the process with SIGBUS, so it is caught there and raised again here,
	// on the calling goroutine, where fault.Catch or the caller's own
	// recovery sees it.
	faults := make([]error, n)
	for c := 1; c < n; c++ {
		lo, hi := bound(c), bound(c+1)
		wg.Go(func() { faults[c] = fault.Catch(func() { fn(c, lo, hi) }) })
	}
	fn(0, 0, bound(1))
	wg.Wait()
	for _, f := range faults {
		if f != nil {
			panic(f)
		}
	}
}
