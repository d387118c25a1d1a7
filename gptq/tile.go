package gptq

import (
	"fmt"

	"github.com/mixq/mixq/quant"
)

// tileRows is the number of rows processed together: each row of U and H
// is read once per tile instead of once per row, which is what bounds the
// speed (the matrices are K×K binary64). Every row still receives exactly
// the operations of rowRun.row, in the same order, so the result is the
// same bits (TestTileMatchesReference).
const tileRows = 8

// tileScratch is one goroutine's working memory for a tile.
type tileScratch struct {
	w, errs [tileRows][]float64
	cand    [tileRows][3][]float32
	sc      [tileRows][3][]uint16
	diff    [tileRows][3][]float64
	inv, sv [tileRows]float32
	f       []float32
}

func newTileScratch(k, gpr int) *tileScratch {
	s := &tileScratch{f: make([]float32, k)}
	for t := range tileRows {
		s.w[t], s.errs[t] = make([]float64, k), make([]float64, k)
		for m := range 3 {
			s.cand[t][m] = make([]float32, k)
			s.sc[t][m] = make([]uint16, gpr)
			s.diff[t][m] = make([]float64, k)
		}
	}
	return s
}

// tileResult is what one row of a tile ended with.
type tileResult struct {
	method        Method
	loss, lossRTN float64
}

// tile quantizes the rows xs (at most tileRows) into outs and scales, as
// rowRun.row does for each.
func (r *rowRun) tile(sc *tileScratch, xs, outs [][]float32, scales [][]uint16, res []tileResult) error {
	n := len(xs)
	nm := 1
	for t, x := range xs {
		if err := r.nearest(x, sc.cand[t][RTN], sc.sc[t][RTN], false); err != nil {
			return err
		}
		if r.search {
			if err := r.nearest(x, sc.cand[t][Search], sc.sc[t][Search], true); err != nil {
				return err
			}
			nm = 2
		}
	}
	if err := r.gptqTile(sc, xs); err != nil {
		return err
	}
	if r.stopped() {
		return errStopped
	}
	ms := []Method{RTN, Search, GPTQ}
	if nm == 1 {
		ms = []Method{RTN, GPTQ}
	}
	var losses [tileRows][3]float64
	r.lossTile(sc, xs, ms, &losses)
	if r.stopped() {
		return errStopped
	}
	for t := range n {
		best, bestLoss := RTN, losses[t][RTN]
		for _, m := range ms[1:] {
			if e := losses[t][m]; e < bestLoss {
				best, bestLoss = m, e
			}
		}
		copy(outs[t], sc.cand[t][best])
		copy(scales[t], sc.sc[t][best])
		res[t] = tileResult{best, bestLoss, losses[t][RTN]}
	}
	return nil
}

// gptqTile is rowRun.gptq for the rows of a tile, interleaved column by
// column; each row's arithmetic is unchanged.
func (r *rowRun) gptqTile(sc *tileScratch, xs [][]float32) error {
	l, u := r.l, r.u
	k := l.Cols
	qmax := int32(l.Precision.QMax())
	n := len(xs)
	for t, x := range xs {
		for j, v := range x {
			sc.w[t][j] = float64(v)
		}
	}
	b0 := 0
	for _, b1 := range r.blocks {
		if r.stopped() {
			return errStopped
		}
		for c := b0; c < b1; c++ {
			uc := u[uOff(c, k) : uOff(c, k)+k-c] // U_cc … U_c,K−1
			us := uc[1 : b1-c]
			for t := range n {
				w := sc.w[t]
				if c%l.GroupSize == 0 {
					g := c / l.GroupSize
					lo, hi := l.Group(g)
					f := sc.f[:hi-lo]
					for j := range f {
						f[j] = float32(w[lo+j])
						if !quant.IsFinite(f[j]) {
							return fmt.Errorf("gptq: updated weight %d is not finite", lo+j)
						}
					}
					s, err := r.scale(f, lo, g, r.search)
					if err != nil {
						return err
					}
					sc.sc[t][GPTQ][g] = s
					sc.inv[t], sc.sv[t] = quant.Reciprocal(s), quant.ScaleValue(s)
				}
				v := float32(w[c])
				if !quant.IsFinite(v) {
					return fmt.Errorf("gptq: updated weight %d is not finite", c)
				}
				d := quant.Decode(quant.Code(v, sc.inv[t], qmax), sc.sv[t])
				sc.cand[t][GPTQ][c] = d
				e := (w[c] - float64(d)) / uc[0]
				sc.errs[t][c] = e
				ws := w[c+1 : b1][:len(us)]
				for j, uv := range us {
					ws[j] -= float64(e * uv)
				}
			}
		}
		if b1 < k {
			for c := b0; c < b1; c++ {
				us := u[uOff(c, k)+b1-c : uOff(c, k)+k-c]
				for t := range n {
					e := sc.errs[t][c]
					tail := sc.w[t][b1:][:len(us)]
					for j, uv := range us {
						tail[j] -= float64(e * uv)
					}
				}
			}
		}
		b0 = b1
	}
	return nil
}

// lossTile is rowRun.loss for every row of the tile and every candidate
// in ms, reading each row of H once.
func (r *rowRun) lossTile(sc *tileScratch, xs [][]float32, ms []Method, out *[tileRows][3]float64) {
	k := r.l.Cols
	for t, x := range xs {
		for _, m := range ms {
			d, q := sc.diff[t][m], sc.cand[t][m]
			for j := range d {
				d[j] = float64(x[j]) - float64(q[j])
			}
		}
	}
	for i := range k {
		if i%512 == 0 && r.stopped() {
			return // the caller sees the context and drops the results
		}
		hi := r.h[tri(i) : tri(i)+i]
		hii := r.h[tri(i)+i]
		for t := range xs {
			for _, m := range ms {
				d := sc.diff[t][m]
				di := d[i]
				if di == 0 {
					continue
				}
				s := dot4(hi, d[:len(hi)])
				out[t][m] += float64(di * (float64(hii*di) + float64(2*s)))
			}
		}
	}
}

// dot4 is Σ a_j·b_j in four partial sums (j mod 4, ascending), added as
// (s0+s1)+(s2+s3); the loss is defined with this order.
func dot4(a, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= len(a); j += 4 {
		s0 += float64(a[j] * b[j])
		s1 += float64(a[j+1] * b[j+1])
		s2 += float64(a[j+2] * b[j+2])
		s3 += float64(a[j+3] * b[j+3])
	}
	for ; j < len(a); j++ {
		s0 += float64(a[j] * b[j])
	}
	return (s0 + s1) + (s2 + s3)
}
