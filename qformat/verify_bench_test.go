package qformat

import (
	"testing"

	"github.com/mixq/mixq/quant"
)

// The code and scale checks Codes runs before any decode: the cost per
// byte of codes (compare with a memory copy of the same size).
func BenchmarkCheckCodes(b *testing.B) {
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		l := quant.Layout{Rows: 4096, Cols: 4096, GroupSize: 128, Precision: p}
		packed := make([]byte, l.Rows*l.RowBytes())
		for i := range packed {
			packed[i] = byte(i*37) & 0x77 // valid in both formats
		}
		scales := make([]uint16, l.NumScales())
		for i := range scales {
			scales[i] = 0x3c00
		}
		b.Run(p.String(), func(b *testing.B) {
			b.SetBytes(int64(len(packed)))
			for range b.N {
				if err := checkCodes(l, packed); err != nil {
					b.Fatal(err)
				}
				if err := checkScales(l, packed, scales); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("copy", func(b *testing.B) {
		src := make([]byte, 4096*4096)
		dst := make([]byte, len(src))
		b.SetBytes(int64(len(src)))
		for range b.N {
			copy(dst, src)
		}
	})
}
