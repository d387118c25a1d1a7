// Package bench measures kernel throughput of every available backend next
// to a memory-copy baseline taken in the same run, for mixq bench. Go's
// testing.B benchmarks (cpu/bench_test.go) cover the same ground for
// developers; this package serves whole-program, machine-readable runs.
//
// Each measurement repeats the operation until a time budget is spent and
// reports the median run, so a single slow run (a page fault, a scheduler
// hiccup) does not decide the figure. Inputs are heavy-tailed random data,
// never zeros, which could run faster than real weights.
//
// GPTQLayer (mixq bench --gptq) times GPTQ on the seven linears of one
// Llama decoder layer through the quantizer's own gptq.QuantizeShared,
// from the second moments of synthetic activations, next to round to
// nearest of the same matrices in the same run, and reports the process's
// peak resident set size; one run per figure, since one 7B-shaped layer
// takes minutes on two cores.
package bench
