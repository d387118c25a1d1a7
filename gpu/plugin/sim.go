//go:build !cuda

package main

import (
	"errors"

	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/gpu/sim"
	"github.com/mixq/mixq/quant"
)

// Kind names what this plugin runs on.
var Kind = "cuda-sim"

// Open returns the emulated backend; there is one emulated device, 0.
func Open(ordinal int, o gpu.Options) (quant.Backend, error) {
	if ordinal != 0 {
		return nil, errors.New("cuda-sim: only device 0 exists")
	}
	return sim.New(o), nil
}

// Bench refuses: timing an emulator says nothing about a GPU.
func Bench(gpu.BenchOptions) ([]gpu.BenchRow, error) {
	return nil, errors.New("cuda-sim: no benchmarks on the emulator")
}
