package qformat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/mixq/mixq/quant"
)

// elements is the product of shape, and false when a dimension is negative
// or the product overflows int64.
func elements(shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		hi, lo := bits.Mul64(uint64(n), uint64(d))
		if hi != 0 || lo > 1<<63-1 {
			return 0, false
		}
		n = int64(lo)
	}
	return n, true
}

// checkScales checks scales (f16 bits, [rows][groups]) as mixq writes them
// (docs/ARITHMETIC.md §1): finite and non-negative, with +0 only for an
// all-zero group. Every scale a quantizer produces passes; anything else
// would decode into NaN, ±Inf or sign-flipped weights.
func checkScales(l quant.Layout, packed []byte, scales []uint16) error {
	ng := l.GroupsPerRow()
	for i, s := range scales {
		switch {
		case s&0x7c00 == 0x7c00:
			what := "+Inf"
			switch {
			case s&0x03ff != 0:
				what = "NaN"
			case s&0x8000 != 0:
				what = "-Inf"
			}
			return fmt.Errorf("scale of row %d, group %d is %s (f16 bits %#04x)", i/ng, i%ng, what, s)
		case s&0x8000 != 0:
			return fmt.Errorf("scale of row %d, group %d is negative (f16 bits %#04x); mixq writes non-negative scales", i/ng, i%ng, s)
		case s == 0:
			r, g := i/ng, i%ng
			if col, ok := nonZeroCode(l, packed[r*l.RowBytes():(r+1)*l.RowBytes()], g); ok {
				return fmt.Errorf("scale of row %d, group %d is zero but column %d has a non-zero code; mixq writes a zero scale only for an all-zero group", r, g, col)
			}
		}
	}
	return nil
}

// nonZeroCode finds a non-zero code in group g of one packed row.
func nonZeroCode(l quant.Layout, row []byte, g int) (int, bool) {
	lo, hi := g*l.GroupSize, min(l.Cols, (g+1)*l.GroupSize)
	for c := lo; c < hi; c++ {
		if code(l, row, c) != 0 {
			return c, true
		}
	}
	return 0, false
}

// code is the stored code of column c of a packed row.
func code(l quant.Layout, row []byte, c int) int {
	if l.Precision == quant.INT8 {
		return int(int8(row[c]))
	}
	return int(quant.UnpackNibble(row[c/2] >> (4 * (c % 2))))
}

// checkCodes checks that every code is in the range mixq writes
// (docs/FORMAT.md): INT8 in [-127, 127] (the byte 0x80, -128, never
// appears), INT4 nibbles in [-7, 7] (the nibble 8, -8, never appears), and
// the padding nibble of an odd-width INT4 row is 0. It reads the codes
// once; the common case of no bad code runs at memory speed (IndexByte for
// INT8, eight bytes at a time for INT4).
func checkCodes(l quant.Layout, packed []byte) error {
	rb := l.RowBytes()
	where := func(off int) error {
		r, b := off/rb, off%rb
		row := packed[r*rb : (r+1)*rb]
		for c := 2 * b; c < min(l.Cols, 2*b+2); c++ {
			if v := code(l, row, c); v < -7 {
				return fmt.Errorf("code of row %d, column %d is %d, outside [-7, 7]", r, c, v)
			}
		}
		return nil
	}
	if l.Precision == quant.INT8 {
		if i := bytes.IndexByte(packed, 0x80); i >= 0 {
			return fmt.Errorf("code of row %d, column %d is -128, outside [-127, 127]", i/rb, i%rb)
		}
		return nil
	}
	// A nibble is 8 exactly when it is zero after XOR with 8. The classic
	// zero-lane test is exact for "some lane is zero", so a word that fails
	// it is scanned byte by byte.
	const ones, highs, eights = 0x1111111111111111, 0x8888888888888888, 0x8888888888888888
	i := 0
	for ; i+8 <= len(packed); i += 8 {
		x := binary.LittleEndian.Uint64(packed[i:]) ^ eights
		if (x-ones)&^x&highs == 0 {
			continue
		}
		for j := i; j < i+8; j++ {
			if err := where(j); err != nil {
				return err
			}
		}
	}
	for ; i < len(packed); i++ {
		if err := where(i); err != nil {
			return err
		}
	}
	if l.Cols%2 == 1 {
		for r := range l.Rows {
			if b := packed[(r+1)*rb-1]; b>>4 != 0 {
				return fmt.Errorf("row %d: the padding nibble after the odd last column is %d, not 0", r, b>>4)
			}
		}
	}
	return nil
}
