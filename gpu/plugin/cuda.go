//go:build cuda

package main

import (
	"github.com/mixq/mixq/cuda"
	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/quant"
)

// Kind names what this plugin runs on.
var Kind = "cuda"

// Open returns the CUDA backend on GPU ordinal.
func Open(ordinal int, o gpu.Options) (quant.Backend, error) {
	d, err := cuda.Open(ordinal)
	if err != nil {
		return nil, err
	}
	return gpu.New(d, o), nil
}

// Bench runs the GPU benchmarks.
func Bench(o gpu.BenchOptions) ([]gpu.BenchRow, error) { return cuda.Bench(o) }
