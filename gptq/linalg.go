package gptq

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/mixq/mixq/internal/par"
	"github.com/mixq/mixq/internal/stop"
)

// maxRetries is how many times the damping is multiplied by 10 after a
// failed factorisation before falling back to Hd = I.
const maxRetries = 6

// Factor is what every matrix quantized against one H shares: H itself
// (packed, undamped, for the proxy losses), U, the upper Cholesky factor of
// Hd⁻¹ (packed by rows: row c holds U_cc … U_c,K−1), and the damped
// diagonal of Hd. q, k and v (gate and up) share one Factor, computed once.
type Factor struct {
	k       int
	h       []float64
	u       []float64
	diag    []float64
	tokens  int64
	notices []string
}

// Notices says what was done to H beyond the plain damping.
func (f *Factor) Notices() []string { return f.notices }

// Channels is K.
func (f *Factor) Channels() int { return f.k }

// Blocks of the factorisations: the Cholesky factor is computed choleskyCols
// columns at a time (each row below the block is read once per block, with
// that many independent sums), the inverse inverseRows rows at a time
// (each row of the inverse above them is read once per tile). Neither
// changes any operation, only the order in which independent entries are
// computed.
const (
	choleskyCols = 8
	inverseRows  = 4
)

// FactorWork is about the number of work units (multiply-adds, K³/3) that
// NewFactor reports through Options.Progress for K channels (more when the
// damping is retried).
func FactorWork(k int) int64 { kk := int64(k); return 2 * (kk * kk * kk / 6) }

// NewFactor damps h and factors it as the package documentation says (step
// 2). It takes h: its storage becomes the Factor's (and h's spare buffer,
// when it has one, the working storage; else one is allocated), so h must
// not be used afterwards. It stops with ctx, checking at least every block
// of columns or tile of rows (well under a second at K = 11008).
func NewFactor(ctx context.Context, h *Sym, tokens int64, opt Options) (*Factor, error) {
	k := h.k
	hp := h.data
	for _, v := range hp {
		if !isFinite(v) {
			return nil, fmt.Errorf("gptq: H holds a non-finite value")
		}
	}
	work := h.spare
	if len(work) != len(hp) {
		work = make([]float64, len(hp))
	}
	h.data, h.spare = nil, nil
	f := &Factor{k: k, h: hp, u: work, tokens: tokens}
	damp, workers := opt.damp(), opt.workers()
	prog := newProgress(opt.Progress)
	var sum float64
	dead := 0
	for i := range k {
		d := hp[tri(i)+i]
		if d > 0 {
			sum += d
		} else {
			dead++
		}
	}
	if dead > 0 {
		f.notices = append(f.notices, fmt.Sprintf("%d of %d input channels never active in calibration: they get only the damping", dead, k))
	}
	if tokens < int64(k) {
		f.notices = append(f.notices, fmt.Sprintf("only %d calibration tokens for %d input channels: H is singular, damping makes it definite", tokens, k))
	}
	mean := sum / float64(k)
	for try := 0; ; try++ {
		if mean == 0 || try > maxRetries {
			if mean != 0 {
				f.notices = append(f.notices, "H stayed indefinite after the retries: plain rounding (H = I)")
			} else {
				f.notices = append(f.notices, "no input channel active in calibration: plain rounding (H = I)")
			}
			clear(work)
			for i := range k {
				work[tri(i)+i] = 1
			}
			if _, err := upperInverseFactor(ctx, work, k, workers, prog); err != nil {
				return nil, err
			}
			f.diag = make([]float64, k)
			for i := range f.diag {
				f.diag[i] = 1
			}
			return f, nil
		}
		lam := damp * math.Pow(10, float64(try)) * mean
		// work = J·(H + λI)·J, lower triangle: entry (r, s), s ≤ r, is
		// H's (K−1−s, K−1−r).
		for r := range k {
			row := work[tri(r) : tri(r)+r+1]
			for s := range row {
				row[s] = hp[tri(k-1-s)+k-1-r]
			}
			row[r] += lam
		}
		f.diag = make([]float64, k)
		for i := range k {
			f.diag[i] = work[tri(k-1-i)+k-1-i]
		}
		ok, err := upperInverseFactor(ctx, work, k, workers, prog)
		if err != nil {
			return nil, err
		}
		if ok {
			return f, nil
		}
		f.notices = append(f.notices, fmt.Sprintf("H + %g·mean(diag H)·I is not positive definite: damping ×10", damp*math.Pow(10, float64(try))))
	}
}

// upperInverseFactor takes a = J·Hd·J, packed lower, and overwrites it
// with U = J·chol(a)⁻¹·J packed upper by rows, the upper Cholesky factor
// of Hd⁻¹; false when a pivot is not positive and finite.
func upperInverseFactor(ctx context.Context, a []float64, k, workers int, prog *progress) (bool, error) {
	ok, err := cholesky(ctx, a, k, workers, prog)
	if !ok || err != nil {
		return false, err
	}
	if err := lowerInverse(ctx, a, k, workers, prog); err != nil {
		return false, err
	}
	for _, v := range a {
		if !isFinite(v) {
			return false, nil
		}
	}
	// U_ij = X_{K−1−i, K−1−j}: row c of U is row K−1−c of X reversed, and
	// the packed rows of U in order are the packed rows of X in reverse
	// order, reversed: the whole array reversed.
	for i, j := 0, len(a)-1; i < j; i, j = i+1, j-1 {
		a[i], a[j] = a[j], a[i]
	}
	return true, nil
}

// progress forwards work units to Options.Progress, one call at a time.
type progress struct {
	mu sync.Mutex
	fn func(units int64)
}

func newProgress(fn func(units int64)) *progress {
	if fn == nil {
		return nil
	}
	return &progress{fn: fn}
}

func (p *progress) add(n int64) {
	if p == nil || n <= 0 {
		return
	}
	p.mu.Lock()
	p.fn(n)
	p.mu.Unlock()
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// cholesky replaces the symmetric a (packed lower, k rows) with L, a = L·Lᵀ:
//
//	L_jj = sqrt(a_jj − Σ_{m<j} L_jm²)
//	L_ij = (a_ij − Σ_{m<j} L_im·L_jm) / L_jj     for i > j
//
// each sum in ascending m, from a_ij, one multiply then one subtraction per
// term. Columns are taken choleskyCols at a time: first the block's own
// rows, one column after the other; then every row below, split over
// goroutines, each row computing the block's columns with that many
// independent sums over the columns before the block, then finishing them
// in column order. Every entry gets the operations of the column by
// column loop, in the same order. It reports false for a pivot that is not
// positive.
func cholesky(ctx context.Context, a []float64, k, workers int, prog *progress) (bool, error) {
	for j0 := 0; j0 < k; j0 += choleskyCols {
		if ctx.Err() != nil {
			return false, fmt.Errorf("gptq: %w", stop.Err(ctx))
		}
		j1 := min(k, j0+choleskyCols)
		// The diagonal block.
		for j := j0; j < j1; j++ {
			rj := a[tri(j) : tri(j)+j]
			d := a[tri(j)+j]
			for _, v := range rj {
				d -= float64(v * v)
			}
			if !(d > 0) || !isFinite(d) {
				return false, nil
			}
			ljj := math.Sqrt(d)
			a[tri(j)+j] = ljj
			for i := j + 1; i < j1; i++ {
				ri := a[tri(i) : tri(i)+j][:len(rj)]
				s := a[tri(i)+j]
				for m, v := range ri {
					s -= float64(v * rj[m])
				}
				a[tri(i)+j] = s / ljj
			}
		}
		rows := k - j1
		w := max(1, min(workers, rows*j1>>15))
		par.Split(rows, 1, w, func(_, lo, hi int) {
			for i := j1 + lo; i < j1+hi; i++ {
				choleskyRow(a, i, j0, j1)
			}
		})
		prog.add(int64(rows+j1-j0) * int64(j1-j0) * int64(j0+1))
	}
	return true, nil
}

// choleskyRow computes L_ij for the columns j0 ≤ j < j1 of row i ≥ j1.
func choleskyRow(a []float64, i, j0, j1 int) {
	ri := a[tri(i) : tri(i)+j1]
	var s [choleskyCols]float64
	var rs [choleskyCols][]float64
	n := j1 - j0
	for b := range n {
		s[b] = ri[j0+b]
		rs[b] = a[tri(j0+b) : tri(j0+b)+j0+b]
	}
	// The columns before the block, shared by every column of it.
	head := ri[:j0]
	if n == choleskyCols {
		r0, r1, r2, r3 := rs[0][:j0], rs[1][:j0], rs[2][:j0], rs[3][:j0]
		r4, r5, r6, r7 := rs[4][:j0], rs[5][:j0], rs[6][:j0], rs[7][:j0]
		s0, s1, s2, s3, s4, s5, s6, s7 := s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
		for m, v := range head {
			s0 -= float64(v * r0[m])
			s1 -= float64(v * r1[m])
			s2 -= float64(v * r2[m])
			s3 -= float64(v * r3[m])
			s4 -= float64(v * r4[m])
			s5 -= float64(v * r5[m])
			s6 -= float64(v * r6[m])
			s7 -= float64(v * r7[m])
		}
		s = [choleskyCols]float64{s0, s1, s2, s3, s4, s5, s6, s7}
	} else {
		for b := range n {
			r := rs[b][:j0]
			for m, v := range head {
				s[b] -= float64(v * r[m])
			}
		}
	}
	// The block's own columns, in order: column j0+b needs L_i,j0..j0+b−1.
	for b := range n {
		j := j0 + b
		r := rs[b]
		for m := j0; m < j; m++ {
			s[b] -= float64(ri[m] * r[m])
		}
		ri[j] = s[b] / a[tri(j)+j]
	}
}

// lowerInverse replaces the lower triangle L (packed, k rows) with
// X = L⁻¹, in place:
//
//	X_cc = 1/L_cc
//	X_ic = −(Σ_{m=c}^{i−1} L_im·X_mc) / L_ii     for i > c, sum ascending in m
//
// Row i needs row i of L and the rows of X above it, so the rows are
// computed in order, inverseRows at a time: each row of X above the tile
// is read once for the tile's rows, column c's sum receiving the term of
// row m in ascending m exactly as the column by column loop adds them.
// The columns are split over goroutines (each column's sum is
// independent); a tile's rows are written over L's once every goroutine
// has read them.
func lowerInverse(ctx context.Context, l []float64, k, workers int, prog *progress) error {
	var acc [inverseRows][]float64
	for t := range acc {
		acc[t] = make([]float64, k)
	}
	for i0 := 0; i0 < k; i0 += inverseRows {
		if ctx.Err() != nil {
			return fmt.Errorf("gptq: %w", stop.Err(ctx))
		}
		i1 := min(k, i0+inverseRows)
		n := i1 - i0
		for t := range n {
			clear(acc[t][:i0+t+1])
		}
		w := max(1, min(workers, i0*i0>>16))
		par.Split(w, 1, w, func(part, _, _ int) {
			// Columns cut so that the parts cost about the same: column c
			// costs about i0 − c.
			c0, c1 := triCut(i0, part, w), triCut(i0, part+1, w)
			if part == w-1 {
				c1 = i1
			}
			inverseTile(l, &acc, i0, n, c0, c1)
		})
		for t := range n {
			i := i0 + t
			copy(l[tri(i):tri(i)+i+1], acc[t][:i+1])
		}
		prog.add(int64(n) * int64(i0+1) * int64(i0+1) / 2)
	}
	return nil
}

// triCut is the first column of part p of w of the columns [0, n) when
// column c costs n − c: parts of about equal cost.
func triCut(n, p, w int) int {
	if p >= w {
		return n
	}
	return n - int(float64(n)*math.Sqrt(1-float64(p)/float64(w)))
}

// inverseTile computes, into acc[t][c0:c1], the entries X_{i0+t, c} of the
// tile's rows for the columns c0 ≤ c < c1 (c ≤ i0+t).
func inverseTile(l []float64, acc *[inverseRows][]float64, i0, n, c0, c1 int) {
	var lr [inverseRows][]float64
	for t := range n {
		lr[t] = l[tri(i0+t) : tri(i0+t)+i0+t+1]
	}
	// Rows of X above the tile: row m adds L_im·X_mc to the sums of the
	// columns c ≤ m.
	for m := c0; m < i0; m++ {
		hi := min(c1, m+1)
		xm := l[tri(m)+c0 : tri(m)+hi]
		if n == inverseRows {
			l0, l1, l2, l3 := lr[0][m], lr[1][m], lr[2][m], lr[3][m]
			a0 := acc[0][c0:hi][:len(xm)]
			a1 := acc[1][c0:hi][:len(xm)]
			a2 := acc[2][c0:hi][:len(xm)]
			a3 := acc[3][c0:hi][:len(xm)]
			for j, x := range xm {
				a0[j] += float64(l0 * x)
				a1[j] += float64(l1 * x)
				a2[j] += float64(l2 * x)
				a3[j] += float64(l3 * x)
			}
			continue
		}
		for t := range n {
			lv := lr[t][m]
			a := acc[t][c0:hi][:len(xm)]
			for j, x := range xm {
				a[j] += float64(lv * x)
			}
		}
	}
	// The tile's own rows, in order: row i0+t also needs X rows i0 … i0+t−1
	// (held in acc until the tile is written) and its own diagonal.
	for t := range n {
		i := i0 + t
		for u := range t {
			m := i0 + u
			lv := lr[t][m]
			hi := min(c1, m+1)
			if c0 >= hi {
				continue
			}
			xm := acc[u][c0:hi]
			a := acc[t][c0:hi][:len(xm)]
			for j, x := range xm {
				a[j] += float64(lv * x)
			}
		}
		lii := lr[t][i]
		a := acc[t]
		for c := c0; c < min(c1, i); c++ {
			a[c] = -a[c] / lii
		}
		if c0 <= i && i < c1 {
			a[i] = 1 / lii
		}
	}
}
