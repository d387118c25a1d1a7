package cpu

// NewGrain is New with the least number of elements per goroutine set to
// grain, so that tests can make even tiny tensors split into many chunks.
func NewGrain(threads, grain int) *Backend {
	b := New(threads)
	b.grain = max(grain, 1)
	return b
}
