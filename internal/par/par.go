// Package par splits a range of work over goroutines. It is shared by the
// CPU backend and the forward pass, which cut their loops the same way.
package par

import (
	"runtime/debug"
	"sync"
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
	faults := make([]any, n)
	for c := 1; c < n; c++ {
		lo, hi := bound(c), bound(c+1)
		wg.Go(func() { faults[c] = catchFault(func() { fn(c, lo, hi) }) })
	}
	fn(0, 0, bound(1))
	wg.Wait()
	for _, f := range faults {
		if f != nil {
			panic(f)
		}
	}
}

// catchFault runs fn with faults on memory-mapped reads turned into panics
// (chunks often read mapped input files) and returns the fault, so that
// Split can raise it again on the calling goroutine, where fault.Catch or
// the caller's own recovery can see it. A fault left on a worker would kill
// the process with SIGBUS.
func catchFault(fn func()) (f any) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			f = r
		}
	}()
	fn()
	return nil
}
