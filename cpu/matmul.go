package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/mixq/mixq/quant"
)

// rowBlock is the number of weight rows whose outputs are computed together:
// their per-group sums are independent dependency chains, so interleaving
// them hides the latency of the floating-point add, and each x element is
// loaded once for all of them.
const rowBlock = 4

// MatMul computes y = x·Wᵀ for x of shape [m, l.Cols] and the quantized W
// of shape [l.Rows, l.Cols], in the order of docs/ARITHMETIC.md:
//
//	for each y[i][n]:
//	    acc[0..31] = 0
//	    for g ascending:
//	        s = 0; for k in group g ascending: s = f32(s + f32(x[i][k]·f32(q[n][k])))
//	        acc[g%32] = f32(acc[g%32] + f32(s·scale[n][g]))
//	    y[i][n] = FoldLanes(&acc)
//
// Output rows n are split across goroutines; the codes of each weight row are
// widened to float32 once and reused for every i.
func (b *Backend) MatMul(y, x []float32, m int, packed []byte, scales []uint16, l quant.Layout) error {
	if err := checkLayout("matmul", l, nil, nonNil(packed), nonNil(scales)); err != nil {
		return err
	}
	if err := l.CheckMatMul(y, x, m); err != nil {
		return fmt.Errorf("cpu: %w", err)
	}
	work := l.Elements()
	if work <= math.MaxInt/m {
		work *= m
	}
	if b.mm != nil {
		b.matmulSIMD(b.mm, y, x, m, packed, scales, l, work)
		return nil
	}
	parallel(l.Rows, 1, b.chunks(l.Rows, work), func(_, lo, hi int) {
		matmul(y, x, m, packed, scales, l, lo, hi)
	})
	return nil
}

// scratch is a reusable float32 buffer for MatMul workers.
var scratch = sync.Pool{New: func() any { return new([]float32) }}

// matmul computes the outputs of weight rows [lo, hi) for every row of x.
func matmul(y, x []float32, m int, packed []byte, scales []uint16, l quant.Layout, lo, hi int) {
	rows, cols, gpr, rb := l.Rows, l.Cols, l.GroupsPerRow(), l.RowBytes()
	int4 := l.Precision == quant.INT4

	bufp := scratch.Get().(*[]float32)
	defer scratch.Put(bufp)
	need := rowBlock * (cols + gpr)
	if cap(*bufp) < need {
		*bufp = make([]float32, need)
	}
	buf := (*bufp)[:need]
	var q [rowBlock][]float32 // widened codes of the rows of the block
	var s [rowBlock][]float32 // their scale values
	for j := range rowBlock {
		q[j] = buf[j*cols : (j+1)*cols]
		s[j] = buf[rowBlock*cols+j*gpr : rowBlock*cols+(j+1)*gpr]
	}

	n := lo
	for ; n+rowBlock <= hi; n += rowBlock {
		for j := range rowBlock {
			widenRow(q[j], s[j], packed[(n+j)*rb:(n+j+1)*rb], scales[(n+j)*gpr:(n+j+1)*gpr], int4)
		}
		for i := range m {
			xi := x[i*cols : (i+1)*cols]
			yi := y[i*rows : (i+1)*rows]
			dotBlock(yi[n:n+rowBlock], xi, &q, &s, l.GroupSize)
		}
	}
	for ; n < hi; n++ {
		widenRow(q[0], s[0], packed[n*rb:(n+1)*rb], scales[n*gpr:(n+1)*gpr], int4)
		for i := range m {
			y[i*rows+n] = dotRow(x[i*cols:(i+1)*cols], q[0], s[0], l.GroupSize)
		}
	}
}

// widenRow writes the codes of one packed row as float32 into q and its
// scales as float32 into s.
func widenRow(q, s []float32, p []byte, sc []uint16, int4 bool) {
	s = s[:len(sc)]
	for g, bits := range sc {
		s[g] = quant.ScaleValue(bits)
	}
	if !int4 {
		p = p[:len(q)]
		for k, c := range p {
			q[k] = float32(int8(c))
		}
		return
	}
	pairs := asPairs(q)
	for j, c := range p[:len(pairs)] {
		pairs[j] = [2]float32{float32(quant.UnpackNibble(c)), float32(quant.UnpackNibble(c >> 4))}
	}
	if n := len(pairs); len(q) > 2*n {
		q[2*n] = float32(quant.UnpackNibble(p[n]))
	}
}

// dotRow is one output: the canonical per-group sums, lanes and fold.
func dotRow(x, q, s []float32, gs int) float32 {
	var acc [quant.MatMulLanes]float32
	cols := len(x)
	q = q[:cols]
	for g, sv := range s {
		a := g * gs
		e := min(a+gs, cols)
		xg, qg := x[a:e], q[a:e]
		qg = qg[:len(xg)]
		var sum float32
		for k, v := range xg {
			sum = float32(sum + float32(v*qg[k]))
		}
		l := g % quant.MatMulLanes
		acc[l] = float32(acc[l] + float32(sum*sv))
	}
	return quant.FoldLanes(&acc)
}

// dotBlock computes rowBlock outputs of one row of x at once, each in the
// canonical order, interleaving their independent chains.
func dotBlock(y, x []float32, q, s *[rowBlock][]float32, gs int) {
	var acc0, acc1, acc2, acc3 [quant.MatMulLanes]float32
	cols := len(x)
	q0, q1, q2, q3 := q[0][:cols], q[1][:cols], q[2][:cols], q[3][:cols]
	s0, s1, s2, s3 := s[0], s[1][:len(s[0])], s[2][:len(s[0])], s[3][:len(s[0])]
	for g := range s0 {
		a := g * gs
		e := min(a+gs, cols)
		xg := x[a:e]
		n := len(xg)
		g0, g1, g2, g3 := q0[a:e][:n], q1[a:e][:n], q2[a:e][:n], q3[a:e][:n]
		var t0, t1, t2, t3 float32
		for k, v := range xg {
			t0 = float32(t0 + float32(v*g0[k]))
			t1 = float32(t1 + float32(v*g1[k]))
			t2 = float32(t2 + float32(v*g2[k]))
			t3 = float32(t3 + float32(v*g3[k]))
		}
		l := g % quant.MatMulLanes
		acc0[l] = float32(acc0[l] + float32(t0*s0[g]))
		acc1[l] = float32(acc1[l] + float32(t1*s1[g]))
		acc2[l] = float32(acc2[l] + float32(t2*s2[g]))
		acc3[l] = float32(acc3[l] + float32(t3*s3[g]))
	}
	y = y[:rowBlock]
	y[0] = quant.FoldLanes(&acc0)
	y[1] = quant.FoldLanes(&acc1)
	y[2] = quant.FoldLanes(&acc2)
	y[3] = quant.FoldLanes(&acc3)
}
