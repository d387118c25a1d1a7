//go:build !amd64 || purego

package cpu

// No matmul kernels on this platform or with the purego tag: MatMul runs
// the plain-Go reference loops.
var mmKernels []*mmISA
