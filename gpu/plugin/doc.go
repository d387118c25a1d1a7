// Command plugin is the CUDA backend as a Go plugin (mixq-cuda.so):
//
//	go build -tags cuda -buildmode=plugin -o bin/mixq-cuda.so ./gpu/plugin
//
// Package backend loads it with plugin.Open once cuda/probe has found a
// device, and looks up these symbols:
//
//	Kind  string                                   "cuda"
//	Open  func(int, gpu.Options) (quant.Backend, error) a backend on GPU N
//	Bench func(gpu.BenchOptions) ([]gpu.BenchRow, error)
//
// Built without the cuda tag it is the same plugin over the emulator of
// gpu/sim (Kind "cuda-sim"), which is how the loading path is tested on
// machines without a GPU. The plugin and the binary that loads it must come
// from the same source tree, Go toolchain and flags (the Go runtime checks
// every shared package), so make builds both together.
package main

func main() {}
