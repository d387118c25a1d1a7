package model

import (
	"fmt"
	"runtime"

	"github.com/mixq/mixq/internal/par"
	"github.com/mixq/mixq/quant"
)

// linear is one weight matrix W of shape [rows, cols] (PyTorch's
// [out_features, in_features]), held either as binary32 or packed.
type linear struct {
	name       string
	rows, cols int
	// w is the row-major binary32 matrix; nil when the weight is quantized.
	w []float32
	// packed and scales are the INT8/INT4 codes and their F16 scales, a
	// view of the mapped checkpoint; layout describes them.
	packed []byte
	scales []uint16
	layout quant.Layout
}

func (l *linear) quantized() bool { return l.w == nil }

// forward computes y = x·Wᵀ for x of shape [m, cols], giving y [m, rows]:
// through the backend's MatMul when W is quantized, else with matmulF32.
func (l *linear) forward(be quant.Backend, y, x []float32, m int) error {
	if len(x) != m*l.cols || len(y) != m*l.rows {
		return fmt.Errorf("model: %s: x has %d elements and y %d, want %d×%d and %d×%d", l.name, len(x), len(y), m, l.cols, m, l.rows)
	}
	if l.quantized() {
		if err := be.MatMul(y, x, m, l.packed, l.scales, l.layout); err != nil {
			return &quant.TensorError{Tensor: l.name, Err: err}
		}
		return nil
	}
	matmulF32(y, x, l.w, m, l.rows, l.cols)
	return nil
}

// row writes row r of W as binary32 into dst (len cols): a copy for a
// float matrix, the backend's Dequantize of that one row for a quantized one.
func (l *linear) row(be quant.Backend, dst []float32, r int) error {
	if !l.quantized() {
		copy(dst, l.w[r*l.cols:(r+1)*l.cols])
		return nil
	}
	one := l.layout
	one.Rows = 1
	rb, gpr := one.RowBytes(), one.GroupsPerRow()
	if err := be.Dequantize(dst, l.packed[r*rb:(r+1)*rb], l.scales[r*gpr:(r+1)*gpr], one); err != nil {
		return &quant.TensorError{Tensor: l.name, Err: err}
	}
	return nil
}

// grain is the least number of multiply-adds worth a goroutine of its own.
const grain = 1 << 16

// rowBlock is the number of weight rows matmulRows computes together.
const rowBlock = 4

// matmulF32 computes y[i][n] = Σ_k x[i][k]·w[n][k] for x [m, cols],
// w [rows, cols] and y [m, rows], each sum in ascending k in binary32.
// Output rows are split over up to GOMAXPROCS goroutines when the work is
// large enough; the result does not depend on the split.
func matmulF32(y, x, w []float32, m, rows, cols int) {
	if m*rows*cols < 2*grain {
		matmulRows(y, x, w, m, rows, cols, 0, rows) // no closure to allocate
		return
	}
	parallelFor(rows, rowBlock, m*rows*cols, func(lo, hi int) {
		matmulRows(y, x, w, m, rows, cols, lo, hi)
	})
}

// parallelFor calls fn over contiguous chunks covering [0, units), every
// boundary but the last a multiple of align, on as many goroutines as work
// (a count of multiply-adds) justifies, and waits for them.
func parallelFor(units, align, work int, fn func(lo, hi int)) {
	n := min(runtime.GOMAXPROCS(0), work/grain, (units+align-1)/align)
	par.Split(units, align, n, func(_, lo, hi int) {
		if lo < hi {
			fn(lo, hi)
		}
	})
}

// matmulRows computes the outputs of weight rows [lo, hi) for every row of
// x. Blocks of rowBlock weight rows stay in cache while the rows of x
// stream past; pairs of x rows share each load of the weights.
func matmulRows(y, x, w []float32, m, rows, cols, lo, hi int) {
	n := lo
	for ; n+rowBlock <= hi; n += rowBlock {
		w0 := w[n*cols : (n+1)*cols]
		w1 := w[(n+1)*cols : (n+2)*cols][:len(w0)]
		w2 := w[(n+2)*cols : (n+3)*cols][:len(w0)]
		w3 := w[(n+3)*cols : (n+4)*cols][:len(w0)]
		i := 0
		for ; i+2 <= m; i += 2 {
			xa := x[i*cols : (i+1)*cols][:len(w0)]
			xb := x[(i+1)*cols : (i+2)*cols][:len(w0)]
			var a0, a1, a2, a3, b0, b1, b2, b3 float32
			for k, wv := range w0 {
				va, vb := xa[k], xb[k]
				a0 += va * wv
				b0 += vb * wv
				v1 := w1[k]
				a1 += va * v1
				b1 += vb * v1
				v2 := w2[k]
				a2 += va * v2
				b2 += vb * v2
				v3 := w3[k]
				a3 += va * v3
				b3 += vb * v3
			}
			ya := y[i*rows+n : i*rows+n+rowBlock]
			ya[0], ya[1], ya[2], ya[3] = a0, a1, a2, a3
			yb := y[(i+1)*rows+n : (i+1)*rows+n+rowBlock]
			yb[0], yb[1], yb[2], yb[3] = b0, b1, b2, b3
		}
		if i < m {
			xa := x[i*cols : (i+1)*cols][:len(w0)]
			var a0, a1, a2, a3 float32
			for k, va := range xa {
				a0 += va * w0[k]
				a1 += va * w1[k]
				a2 += va * w2[k]
				a3 += va * w3[k]
			}
			ya := y[i*rows+n : i*rows+n+rowBlock]
			ya[0], ya[1], ya[2], ya[3] = a0, a1, a2, a3
		}
	}
	for ; n < hi; n++ {
		wn := w[n*cols : (n+1)*cols]
		for i := range m {
			y[i*rows+n] = dot(x[i*cols:(i+1)*cols], wn)
		}
	}
}

// dot is Σ a[k]·b[k] in ascending k, in binary32.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s float32
	for k, v := range a {
		s += v * b[k]
	}
	return s
}
