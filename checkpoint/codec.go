package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"

	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/internal/par"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/x448/float16"
)

// floatDTypes are the dtypes DecodeFloat32 and EncodeFloat32 handle.
var floatDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16}

// DecodeFloat32 converts raw little-endian elements of dtype dt (F32, F16 or
// BF16) to binary32, exactly, as Tensor.Float32 does for a whole tensor; it
// serves callers that convert a tensor block by block. len(raw) must be
// len(dst) × dt.Size().
func DecodeFloat32(dst []float32, raw []byte, dt safetensors.DType) error {
	if !slices.Contains(floatDTypes, dt) {
		return fmt.Errorf("cannot convert dtype %s to F32 (supported: %s)", dt, joinDTypes(floatDTypes))
	}
	if len(raw) != len(dst)*dt.Size() {
		return fmt.Errorf("%d bytes of %s do not hold %d elements", len(raw), dt, len(dst))
	}
	// Conversion is a pure per-element map: large blocks are cut over the
	// cores, so that feeding a fast backend (the GPU) is not limited by one
	// core's decode speed. Small blocks stay on the calling goroutine.
	// raw is usually mapped from the input file: a file truncated under the
	// mapping faults on whichever goroutine reads, par.Split raises a
	// worker's fault here, and fault.Catch turns it into an error instead of
	// a SIGBUS.
	esz := dt.Size()
	n := min(runtime.GOMAXPROCS(0), len(dst)/decodeGrain)
	err := fault.Catch(func() {
		par.Split(len(dst), 64, n, func(_, lo, hi int) {
			d, r := dst[lo:hi], raw[lo*esz:hi*esz]
			switch dt {
			case safetensors.F32:
				f32FromLE(d, r)
			case safetensors.F16:
				f16FromLE(d, r)
			case safetensors.BF16:
				bf16FromLE(d, r)
			}
		})
	})
	if err != nil {
		return quant.InputError(err)
	}
	return nil
}

// decodeGrain is the least number of elements worth a goroutine.
const decodeGrain = 1 << 18

// EncodeFloat32 stores src as little-endian elements of dtype dt into dst,
// whose length must be len(src) × dt.Size():
//
//	F32:  the bits as they are.
//	F16:  round to nearest even, subnormals kept (github.com/x448/float16).
//	BF16: round to nearest even on the top 16 bits; a NaN stays a NaN
//	      (quiet, sign and top payload bits kept).
//
// NaN and ±Inf inputs are stored as such, but a finite value that rounds to
// ±Inf (|x| ≥ 65520 for F16) is an error naming its index and value, so a
// conversion never turns a number into an infinity silently.
func EncodeFloat32(dst []byte, src []float32, dt safetensors.DType) error {
	if !slices.Contains(floatDTypes, dt) {
		return fmt.Errorf("cannot convert F32 to dtype %s (supported: %s)", dt, joinDTypes(floatDTypes))
	}
	if len(dst) != len(src)*dt.Size() {
		return fmt.Errorf("%d bytes of %s do not hold %d elements", len(dst), dt, len(src))
	}
	switch dt {
	case safetensors.F32:
		if len(src) > 0 {
			f32ToLE(dst, src)
		}
	case safetensors.F16:
		for i, x := range src {
			h := uint16(float16.Fromfloat32(x))
			if h&0x7fff == 0x7c00 && !math.IsInf(float64(x), 0) {
				return fmt.Errorf("value %g at index %d overflows F16 (max 65504)", x, i)
			}
			binary.LittleEndian.PutUint16(dst[2*i:], h)
		}
	case safetensors.BF16:
		for i, x := range src {
			h, ok := bf16Round(x)
			if !ok {
				return fmt.Errorf("value %g at index %d overflows BF16", x, i)
			}
			binary.LittleEndian.PutUint16(dst[2*i:], h)
		}
	}
	return nil
}

// bf16Round rounds a binary32 to bfloat16, nearest even. ok is false when a
// finite x rounds to ±Inf.
func bf16Round(x float32) (h uint16, ok bool) {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		// NaN: truncating could clear every payload bit left and make it
		// an infinity, so force the quiet bit.
		return uint16(b>>16) | 0x0040, true
	}
	// Adding 0x7fff plus the lowest kept bit carries into the kept bits
	// exactly when the dropped half is above one half, or equal to it with
	// an odd kept part. No non-NaN b overflows uint32 here.
	h = uint16((b + 0x7fff + (b>>16)&1) >> 16)
	overflow := h&0x7fff == 0x7f80 && b&0x7fffffff != 0x7f800000
	return h, !overflow
}
