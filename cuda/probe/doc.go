// Package probe finds out, without linking the CUDA driver, whether this
// machine can run the CUDA backend: it dlopens libcuda.so.1, calls cuInit
// and lists the devices with their compute capability and memory.
//
// It is what lets the default mixq binary run anywhere. gorgonia.org/cu
// exits the process from its package init when there is no device, so the
// binary must know there is one before it loads the plugin that links cu.
package probe
