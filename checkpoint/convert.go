package checkpoint

import (
	"encoding/binary"
	"math"
	"sync"
	"unsafe"

	"github.com/x448/float16"
)

// The conversions below are the hot path of every pass over a checkpoint.
// Where the host is little-endian and the source suitably aligned they read
// the mapping as []uint16 directly, eight elements per iteration (Go does
// not unroll or vectorise, and unrolling measured 2-3x faster); otherwise
// they assemble each value from bytes, which works anywhere. Both paths give
// the same bits, and the tests run both, on lengths that leave a ragged tail.

// hostLittleEndian is true when numbers in memory have the file's byte
// order, so the raw bytes can be read in place. A variable so the tests can
// force the portable path.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// halfView returns src as n uint16 values in place, or ok == false when
// that would misread (big-endian host) or misalign (odd address; the
// safetensors writers align the data buffer to 8, so this is rare).
func halfView(src []byte, n int) (u []uint16, ok bool) {
	if !hostLittleEndian || n == 0 || uintptr(unsafe.Pointer(&src[0]))%2 != 0 {
		return nil, false
	}
	src = src[:2*n] // the view must not reach past src
	return unsafe.Slice((*uint16)(unsafe.Pointer(&src[0])), n), true
}

// f32FromLE copies little-endian binary32 bytes into dst; len(src) must be
// 4*len(dst).
func f32FromLE(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	if hostLittleEndian {
		// A byte copy into dst's memory: no alignment needed, and as fast
		// as memory allows.
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src[:4*len(dst)])
		return
	}
	src = src[:4*len(dst)]
	for i := range dst {
		b := src[4*i : 4*i+4 : 4*i+4]
		dst[i] = math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
	}
}

// bf16FromLE widens bfloat16, which is the top half of a binary32, so
// bits<<16 is exact for every value, NaN payloads included.
func bf16FromLE(dst []float32, src []byte) {
	if u, ok := halfView(src, len(dst)); ok {
		dst = dst[:len(u)]
		i := 0
		for ; i+8 <= len(u); i += 8 {
			d, s := dst[i:i+8:i+8], u[i:i+8:i+8]
			d[0] = math.Float32frombits(uint32(s[0]) << 16)
			d[1] = math.Float32frombits(uint32(s[1]) << 16)
			d[2] = math.Float32frombits(uint32(s[2]) << 16)
			d[3] = math.Float32frombits(uint32(s[3]) << 16)
			d[4] = math.Float32frombits(uint32(s[4]) << 16)
			d[5] = math.Float32frombits(uint32(s[5]) << 16)
			d[6] = math.Float32frombits(uint32(s[6]) << 16)
			d[7] = math.Float32frombits(uint32(s[7]) << 16)
		}
		for ; i < len(u); i++ {
			dst[i] = math.Float32frombits(uint32(u[i]) << 16)
		}
		return
	}
	src = src[:2*len(dst)]
	for i := range dst {
		b := src[2*i : 2*i+2 : 2*i+2]
		dst[i] = math.Float32frombits((uint32(b[0]) | uint32(b[1])<<8) << 16)
	}
}

// f16Table maps every binary16 bit pattern to its binary32 value as
// github.com/x448/float16 computes it (exact; NaNs made quiet with their
// payload kept). A 256 KiB lookup measured about twice as fast as the
// branchy bit manipulation on model weights, and it is correct by
// construction. Built on first use.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = float16.Frombits(uint16(h)).Float32()
	}
	return &t
})

// f16FromLE widens binary16 exactly.
func f16FromLE(dst []float32, src []byte) {
	t := f16Table()
	if u, ok := halfView(src, len(dst)); ok {
		dst = dst[:len(u)]
		i := 0
		for ; i+8 <= len(u); i += 8 {
			d, s := dst[i:i+8:i+8], u[i:i+8:i+8]
			d[0], d[1], d[2], d[3] = t[s[0]], t[s[1]], t[s[2]], t[s[3]]
			d[4], d[5], d[6], d[7] = t[s[4]], t[s[5]], t[s[6]], t[s[7]]
		}
		for ; i < len(u); i++ {
			dst[i] = t[u[i]]
		}
		return
	}
	src = src[:2*len(dst)]
	for i := range dst {
		b := src[2*i : 2*i+2 : 2*i+2]
		dst[i] = t[uint16(b[0])|uint16(b[1])<<8]
	}
}

// f32ToLE stores binary32 values little-endian; len(dst) must be
// 4*len(src) > 0.
func f32ToLE(dst []byte, src []float32) {
	if hostLittleEndian {
		copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
		return
	}
	for i, x := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(x))
	}
}
