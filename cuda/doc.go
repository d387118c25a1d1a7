// Package cuda is a thin layer over gorgonia.org/cu that implements
// gpu.Device on an NVIDIA GPU: a context on a locked OS thread (cu.Ctx),
// the kernels' PTX loaded from package kernels with the JIT error log on
// failure, two non-blocking streams, launches that pass every argument as a
// 64-bit word, and every CUresult turned into a Go error.
//
// It builds only with -tags cuda, against the CUDA 11.8 headers. cu's
// package init calls cuInit and exits the process when there is no device,
// so no default binary may link this package: the CUDA backend is a plugin
// (gpu/plugin, -buildmode=plugin) that package backend loads after
// cuda/probe has found a driver and a device.
//
// Set MIXQ_CUDA_SYNC=1 to synchronise after every launch, so that a kernel
// fault is reported by the launch that caused it.
package cuda
