//go:build !amd64 || purego

package cpu

// No vector kernels on this platform or with the purego tag: QuantizeGroups
// always runs the plain-Go loops.
var haveSIMD = false

const simdName = "none"

func absMaxGroups(m []uint32, x []float32, gs int) { panic("cpu: no vector kernels") }
func scalesGroups(bits []uint16, inv []float32, m []uint32, qmax float32) {
	panic("cpu: no vector kernels")
}
func encodeGroups8(dst []byte, x []float32, inv []float32, gs int) { panic("cpu: no vector kernels") }
func encodeGroups4(dst []byte, x []float32, inv []float32, gs int) { panic("cpu: no vector kernels") }
func decodeGroups8(y []float32, p []byte, sv []float32, gs int)    { panic("cpu: no vector kernels") }
func decodeGroups4(y []float32, p []byte, sv []float32, gs int)    { panic("cpu: no vector kernels") }
