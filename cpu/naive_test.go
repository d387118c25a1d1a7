package cpu_test

import (
	"errors"
	"fmt"
	"math"

	"github.com/mixq/mixq/quant"
)

// naive is docs/ARITHMETIC.md transcribed loop by loop, with no attempt at
// speed: one element at a time, quant's scalar functions called as written.
// The conformance suite run on it proves the optimised reference (its fast
// paths, its blocking, its splitting across goroutines) computes the
// contract, and not merely itself.
type naive struct{}

func (naive) Name() string { return "naive" }

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (naive) GroupScales(scales []uint16, w []float32, l quant.Layout) error {
	if err := l.CheckBuffers(orEmpty(w), nil, orEmpty(scales)); err != nil {
		return err
	}
	for i, x := range w {
		if !quant.IsFinite(x) {
			return &quant.NonFiniteError{Index: i, Value: x}
		}
	}
	var first error
	gpr := l.GroupsPerRow()
	for r := range l.Rows {
		for g := range gpr {
			lo, hi := l.Group(g)
			var amax uint32
			for c := lo; c < hi; c++ {
				amax = max(amax, quant.AbsBits(w[r*l.Cols+c]))
			}
			a := math.Float32frombits(amax)
			bits, ok := quant.ScaleBits(a, l.Precision)
			scales[r*gpr+g] = bits
			if !ok && first == nil {
				first = &quant.ScaleOverflowError{Row: r, Group: g, AbsMax: a}
			}
		}
	}
	return first
}

func (naive) Quantize(packed []byte, w []float32, scales []uint16, l quant.Layout) error {
	if err := l.CheckBuffers(orEmpty(w), orEmpty(packed), orEmpty(scales)); err != nil {
		return err
	}
	gpr, rb, qmax := l.GroupsPerRow(), l.RowBytes(), int32(l.Precision.QMax())
	for r := range l.Rows {
		for c := range l.Cols {
			inv := quant.Reciprocal(scales[r*gpr+c/l.GroupSize])
			q := quant.Code(w[r*l.Cols+c], inv, qmax)
			if l.Precision == quant.INT8 {
				packed[r*rb+c] = byte(int8(q))
			} else if c%2 == 0 {
				packed[r*rb+c/2] = quant.PackNibble(q) // high nibble 0 until column c+1
			} else {
				packed[r*rb+c/2] |= quant.PackNibble(q) << 4
			}
		}
	}
	return nil
}

func code(packed []byte, l quant.Layout, r, c int) int32 {
	if l.Precision == quant.INT8 {
		return int32(int8(packed[r*l.RowBytes()+c]))
	}
	return quant.UnpackNibble(packed[r*l.RowBytes()+c/2] >> (4 * (c % 2)))
}

func (naive) Dequantize(w []float32, packed []byte, scales []uint16, l quant.Layout) error {
	if err := l.CheckBuffers(orEmpty(w), orEmpty(packed), orEmpty(scales)); err != nil {
		return err
	}
	gpr := l.GroupsPerRow()
	for r := range l.Rows {
		for c := range l.Cols {
			w[r*l.Cols+c] = quant.Decode(code(packed, l, r, c), quant.ScaleValue(scales[r*gpr+c/l.GroupSize]))
		}
	}
	return nil
}

func (naive) MatMul(y, x []float32, m int, packed []byte, scales []uint16, l quant.Layout) error {
	if err := l.CheckBuffers(nil, orEmpty(packed), orEmpty(scales)); err != nil {
		return err
	}
	if m < 1 || len(x) != m*l.Cols || len(y) != m*l.Rows {
		return fmt.Errorf("naive: matmul: m=%d, len(x)=%d, len(y)=%d", m, len(x), len(y))
	}
	gpr := l.GroupsPerRow()
	for i := range m {
		for n := range l.Rows {
			var acc [quant.MatMulLanes]float32
			for g := range gpr {
				lo, hi := l.Group(g)
				var s float32
				for k := lo; k < hi; k++ {
					s = float32(s + float32(x[i*l.Cols+k]*float32(code(packed, l, n, k))))
				}
				t := float32(s * quant.ScaleValue(scales[n*gpr+g]))
				acc[g%quant.MatMulLanes] = float32(acc[g%quant.MatMulLanes] + t)
			}
			y[i*l.Rows+n] = quant.FoldLanes(&acc)
		}
	}
	return nil
}

func (naive) ChannelStats(s *quant.Stats, x []float32, tokens int) error {
	if s == nil || len(s.M2) != len(s.Mean) || tokens < 0 || len(x) != tokens*len(s.Mean) {
		return errors.New("naive: channelstats: bad arguments")
	}
	ch := s.Channels()
	batch := quant.NewStats(ch)
	batch.Count = int64(tokens)
	for c := range ch {
		for t := range tokens {
			batch.Mean[c], batch.M2[c] = quant.WelfordStep(batch.Mean[c], batch.M2[c], x[t*ch+c], int64(t+1))
		}
	}
	return s.Merge(batch)
}
