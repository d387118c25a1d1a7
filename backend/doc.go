// Package backend chooses the compute backend at run time: the CPU
// reference, or the CUDA backend when this machine has a usable NVIDIA GPU.
//
// The default mixq binary never links the CUDA driver (gorgonia.org/cu
// exits the process from its init when there is no device). Instead:
//
//  1. cuda/probe dlopens libcuda.so.1, calls cuInit and lists the devices;
//  2. only if a device the kernels support is present, the CUDA backend
//     plugin (mixq-cuda.so, built from gpu/plugin) is opened with
//     plugin.Open and asked for a backend.
//
// "auto" falls back to the CPU with a one-line notice when any step fails;
// "cuda" turns the same failure into an input error (exit code 2) that says
// which step failed.
package backend
