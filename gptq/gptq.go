package gptq

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/mixq/mixq/internal/par"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/quant"
)

// Options configures Quantize. The zero value means the defaults.
type Options struct {
	// Damp is λ, the relative damping of H (0: DefaultDamp).
	Damp float64
	// BlockSize is the number of columns whose updates are applied lazily
	// together (0: DefaultBlockSize). It does not change the result.
	BlockSize int
	// Search chooses each group's scale with SearchScale (weighted by the
	// damped diagonal of H) instead of absmax.
	Search bool
	// Workers bounds the goroutines (0: GOMAXPROCS). It does not change the result.
	Workers int
	// Progress, when set, receives work units (about multiply-adds) as
	// they are done, one call at a time, from any goroutine: FactorWork
	// in all for a factorisation, RowWork for a matrix. It must return
	// quickly.
	Progress func(units int64)

	// reference runs the rows one at a time (the reference the tiled
	// loop is tested against).
	reference bool
}

// Defaults of Options.
const (
	DefaultDamp      = 0.01
	DefaultBlockSize = 128
)

func (o Options) damp() float64 {
	if o.Damp > 0 {
		return o.Damp
	}
	return DefaultDamp
}

func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// Method says which rounding a row ended with.
type Method uint8

// The rounding methods, in the order ties are broken.
const (
	RTN    Method = iota // round to nearest, absmax scales
	Search               // round to nearest, searched scales
	GPTQ                 // error feedback
)

func (m Method) String() string { return [...]string{"rtn", "search", "gptq"}[m] }

// Result is a quantized matrix: the scales and the dequantized weights
// Decode(q, s) (which a backend's Quantize maps back to the codes q), with
// what was measured on the way.
type Result struct {
	Scales  []uint16
	W       []float32
	Rows    [3]int // rows that ended with each Method
	Notices []string
	// Proxy losses tr((W−Ŵ) H (W−Ŵ)ᵀ) of the result and of round to
	// nearest with absmax scales.
	Loss, LossRTN float64
}

// Quantize runs GPTQ on w (row-major l.Rows × l.Cols) with h = E[x xᵀ] of
// its inputs (row-major Cols × Cols, symmetric), as the package
// documentation describes, and returns scales and dequantized weights in
// the layout l. tokens is the number of calibration tokens behind h (for
// notices). Errors: a non-finite weight gives *quant.NonFiniteError, an
// overflowing scale *quant.ScaleOverflowError, as for a backend.
func Quantize(w []float32, l quant.Layout, h []float64, tokens int64, opt Options) (*Result, error) {
	return QuantizeContext(context.Background(), w, l, h, tokens, opt)
}

// QuantizeContext is Quantize that stops, with an error wrapping
// ctx's cancellation (errors.Is(err, context.Canceled)), when ctx is
// done; it checks before every tile of rows and during the factorisation.
// It packs h (see Sym) and runs NewFactor and Factor.Quantize.
func QuantizeContext(ctx context.Context, w []float32, l quant.Layout, h []float64, tokens int64, opt Options) (*Result, error) {
	if err := l.CheckBuffers(w, nil, nil); err != nil {
		return nil, err
	}
	k := l.Cols
	if len(h) != k*k {
		return nil, fmt.Errorf("gptq: H has %d entries, want %d×%d", len(h), k, k)
	}
	if err := checkWeights(w); err != nil {
		return nil, err
	}
	s, err := SymFromDense(h, k)
	if err != nil {
		return nil, err
	}
	f, err := NewFactor(ctx, s, tokens, opt)
	if err != nil {
		return nil, err
	}
	return f.Quantize(ctx, w, l, opt)
}

func checkWeights(w []float32) error {
	for i, v := range w {
		if !quant.IsFinite(v) {
			return &quant.NonFiniteError{Index: i, Value: v}
		}
	}
	return nil
}

// RowWork is the number of work units (multiply-adds) that Factor.Quantize
// reports through Options.Progress for a matrix of layout l: per row, the
// error-feedback loop and the proxy loss of each candidate, K²/2 each.
func RowWork(l quant.Layout, search bool) int64 {
	k := int64(l.Cols)
	per := int64(3)
	if search {
		per = 4
	}
	return int64(l.Rows) * per * (k * (k + 1) / 2)
}

// Quantize runs steps 3 and 4 of the package documentation on w
// (row-major l.Rows × l.Cols, l.Cols = K) with the factor f, as the
// package-level Quantize does; opt.Damp is f's already. It stops with ctx,
// checking before every tile of rows.
func (f *Factor) Quantize(ctx context.Context, w []float32, l quant.Layout, opt Options) (*Result, error) {
	if err := l.CheckBuffers(w, nil, nil); err != nil {
		return nil, err
	}
	k := l.Cols
	if k != f.k {
		return nil, fmt.Errorf("gptq: a %d×%d matrix against the factor of %d channels", l.Rows, k, f.k)
	}
	if err := checkWeights(w); err != nil {
		return nil, err
	}
	workers := opt.workers()
	prog := newProgress(opt.Progress)
	perRow := RowWork(quant.Layout{Rows: 1, Cols: k}, opt.Search)
	res := &Result{Scales: make([]uint16, l.NumScales()), W: make([]float32, len(w)), Notices: append([]string(nil), f.notices...)}
	run := &rowRun{ctx: ctx, l: l, h: f.h, u: f.u, diag: f.diag, search: opt.Search, blocks: blocks(k, l.GroupSize, opt.BlockSize)}
	type part struct {
		rows   [3]int
		err    error
		errRow int
	}
	nw := max(1, min(workers, l.Rows))
	parts := make([]part, nw)
	losses := make([]float64, 2*l.Rows)
	gpr := l.GroupsPerRow()
	par.Split(l.Rows, 1, nw, func(c, lo, hi int) {
		p := &parts[c]
		if opt.reference {
			sc := newRowScratch(k)
			for r := lo; r < hi; r++ {
				if ctx.Err() != nil {
					p.err, p.errRow = stop.Err(ctx), r
					return
				}
				m, loss, lossRTN, err := run.row(sc, w[r*k:(r+1)*k], res.W[r*k:(r+1)*k], res.Scales[r*gpr:(r+1)*gpr])
				if err != nil {
					p.err, p.errRow = err, r
					return
				}
				p.rows[m]++
				losses[2*r], losses[2*r+1] = loss, lossRTN
				prog.add(perRow)
			}
			return
		}
		sc := newTileScratch(k, gpr)
		var xs, outs [][]float32
		var scs [][]uint16
		var tr [tileRows]tileResult
		for r0 := lo; r0 < hi; r0 += tileRows {
			if ctx.Err() != nil {
				p.err, p.errRow = stop.Err(ctx), r0
				return
			}
			r1 := min(hi, r0+tileRows)
			xs, outs, scs = xs[:0], outs[:0], scs[:0]
			for r := r0; r < r1; r++ {
				xs = append(xs, w[r*k:(r+1)*k])
				outs = append(outs, res.W[r*k:(r+1)*k])
				scs = append(scs, res.Scales[r*gpr:(r+1)*gpr])
			}
			if err := run.tile(sc, xs, outs, scs, tr[:r1-r0]); err != nil {
				if errors.Is(err, errStopped) {
					p.err, p.errRow = stop.Err(ctx), r0
					return
				}
				// Name the first failing row in row order, whatever the
				// tiles: redo the tile's rows one at a time.
				rs := newRowScratch(k)
				for r := r0; r < r1; r++ {
					if _, _, _, err := run.row(rs, w[r*k:(r+1)*k], res.W[r*k:(r+1)*k], res.Scales[r*gpr:(r+1)*gpr]); err != nil {
						p.err, p.errRow = err, r
						return
					}
				}
				p.err, p.errRow = err, r0 // not reached: the rows fail alone too
				return
			}
			for t := range r1 - r0 {
				p.rows[tr[t].method]++
				losses[2*(r0+t)], losses[2*(r0+t)+1] = tr[t].loss, tr[t].lossRTN
			}
			prog.add(int64(r1-r0) * perRow)
		}
	})
	if ctx.Err() != nil {
		return nil, fmt.Errorf("gptq: %w", stop.Err(ctx))
	}
	for _, p := range parts {
		if p.err != nil {
			var so *quant.ScaleOverflowError
			if errors.As(p.err, &so) {
				return nil, &quant.ScaleOverflowError{Row: p.errRow, Group: so.Group, AbsMax: so.AbsMax}
			}
			return nil, fmt.Errorf("row %d: %w", p.errRow, p.err)
		}
		for m, n := range p.rows {
			res.Rows[m] += n
		}
	}
	// Sum the row losses in row order, whatever the split.
	for r := range l.Rows {
		res.Loss += losses[2*r]
		res.LossRTN += losses[2*r+1]
	}
	return res, nil
}

// errStopped is what a tile returns when the context is done.
var errStopped = errors.New("gptq: stopped")

// stopped reports whether the run's context is done (nil: never).
func (r *rowRun) stopped() bool { return r.ctx != nil && r.ctx.Err() != nil }

// blocks returns the end of each block of columns: at most bs columns, and
// every group start a block start (blocks hold whole groups when the group
// fits, else are cut at group boundaries).
func blocks(k, g, bs int) []int {
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	var ends []int
	step := bs
	if g <= bs {
		step = g * (bs / g)
	}
	for c := 0; c < k; {
		e := min(k, c+step)
		if g > bs {
			e = min(e, (c/g+1)*g)
		}
		ends = append(ends, e)
		c = e
	}
	return ends
}

// rowRun is what every row shares: h is H packed lower (Sym), u is U
// packed upper by rows (Factor).
type rowRun struct {
	ctx    context.Context // checked within a tile too (a tile of 8 rows at K = 11008 is seconds of work)
	l      quant.Layout
	h, u   []float64
	diag   []float64
	search bool
	blocks []int
}

// rowScratch is one goroutine's working memory.
type rowScratch struct {
	w    []float64 // the row being updated
	f    []float32 // binary32 values of a group
	errs []float64 // scaled errors of the current block
	cand [3][]float32
	sc   [3][]uint16
	diff []float64
}

func newRowScratch(k int) *rowScratch {
	s := &rowScratch{w: make([]float64, k), f: make([]float32, k), errs: make([]float64, k), diff: make([]float64, k)}
	for i := range s.cand {
		s.cand[i] = make([]float32, k)
	}
	return s
}

// row quantizes one row x into out (dequantized) and scales, returning the
// method kept and the proxy losses of the result and of absmax rounding.
func (r *rowRun) row(sc *rowScratch, x, out []float32, scales []uint16) (Method, float64, float64, error) {
	l := r.l
	gpr := l.GroupsPerRow()
	for m := range sc.sc {
		if cap(sc.sc[m]) < gpr {
			sc.sc[m] = make([]uint16, gpr)
		}
		sc.sc[m] = sc.sc[m][:gpr]
	}
	if err := r.nearest(x, sc.cand[RTN], sc.sc[RTN], false); err != nil {
		return 0, 0, 0, err
	}
	nm := 1
	if r.search {
		if err := r.nearest(x, sc.cand[Search], sc.sc[Search], true); err != nil {
			return 0, 0, 0, err
		}
		nm = 2
	}
	if err := r.gptq(sc, x, sc.cand[GPTQ], sc.sc[GPTQ]); err != nil {
		return 0, 0, 0, err
	}
	best, bestLoss := RTN, r.loss(sc, x, sc.cand[RTN])
	lossRTN := bestLoss
	for _, m := range []Method{Search, GPTQ}[2-nm:] {
		if e := r.loss(sc, x, sc.cand[m]); e < bestLoss {
			best, bestLoss = m, e
		}
	}
	copy(out, sc.cand[best])
	copy(scales, sc.sc[best])
	return best, bestLoss, lossRTN, nil
}

// nearest rounds x to nearest with absmax or searched scales.
func (r *rowRun) nearest(x, out []float32, scales []uint16, search bool) error {
	l := r.l
	qmax := int32(l.Precision.QMax())
	for g := range scales {
		lo, hi := l.Group(g)
		s, err := r.scale(x[lo:hi], lo, g, search)
		if err != nil {
			return err
		}
		scales[g] = s
		inv, sv := quant.Reciprocal(s), quant.ScaleValue(s)
		for j := lo; j < hi; j++ {
			out[j] = quant.Decode(quant.Code(x[j], inv, qmax), sv)
		}
	}
	return nil
}

// scale chooses the scale of group g (columns from lo) of values f.
func (r *rowRun) scale(f []float32, lo, g int, search bool) (uint16, error) {
	var s uint16
	var ok bool
	if search {
		s, ok = SearchScale(f, r.diag[lo:lo+len(f)], r.l.Precision)
	} else {
		s, ok = quant.ScaleBits(AbsMax(f), r.l.Precision)
	}
	if !ok {
		return 0, &quant.ScaleOverflowError{Group: g, AbsMax: AbsMax(f)}
	}
	return s, nil
}

// gptq runs the error-feedback loop of the package documentation on x.
func (r *rowRun) gptq(sc *rowScratch, x, out []float32, scales []uint16) error {
	l, u := r.l, r.u
	k := l.Cols
	qmax := int32(l.Precision.QMax())
	w := sc.w
	for j, v := range x {
		w[j] = float64(v)
	}
	var inv, sv float32
	b0 := 0
	for _, b1 := range r.blocks {
		for c := b0; c < b1; c++ {
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
				scales[g] = s
				inv, sv = quant.Reciprocal(s), quant.ScaleValue(s)
			}
			v := float32(w[c])
			if !quant.IsFinite(v) {
				return fmt.Errorf("gptq: updated weight %d is not finite", c)
			}
			d := quant.Decode(quant.Code(v, inv, qmax), sv)
			out[c] = d
			uc := u[uOff(c, k) : uOff(c, k)+k-c] // U_cc … U_c,K−1
			e := (w[c] - float64(d)) / uc[0]
			sc.errs[c] = e
			ws, us := w[c+1:b1], uc[1 : b1-c][:b1-c-1]
			for j, uv := range us {
				ws[j] -= float64(e * uv)
			}
		}
		if b1 < k {
			tail := w[b1:]
			for c := b0; c < b1; c++ {
				e := sc.errs[c]
				us := u[uOff(c, k)+b1-c : uOff(c, k)+k-c][:len(tail)]
				for j, uv := range us {
					tail[j] -= float64(e * uv)
				}
			}
		}
		b0 = b1
	}
	return nil
}

// loss is (x−q)ᵀ H (x−q) for one row, in binary64:
// Σ_i d_i·(H_ii·d_i + 2·Σ_{j<i} H_ij·d_j), the outer sum ascending, the
// inner one as dot4 computes it.
func (r *rowRun) loss(sc *rowScratch, x, q []float32) float64 {
	d := sc.diff
	for j := range d {
		d[j] = float64(x[j]) - float64(q[j])
	}
	var total float64
	for i, di := range d {
		if di == 0 {
			continue
		}
		s := dot4(r.h[tri(i):tri(i)+i], d[:i])
		total += float64(di * (float64(r.h[tri(i)+i]*di) + float64(2*s)))
	}
	return total
}
