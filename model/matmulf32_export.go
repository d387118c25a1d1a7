package model

// MatMulF32 is the forward pass's binary32 matmul, y = x·Wᵀ in plain Go
// (each sum in ascending k), exported so that `mixq bench` can measure it
// beside the quantized matmul of the same shape.
func MatMulF32(y, x, w []float32, m, rows, cols int) { matmulF32(y, x, w, m, rows, cols) }
