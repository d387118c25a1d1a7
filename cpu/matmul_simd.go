package cpu

import (
	"sync"
	"sync/atomic"

	"github.com/mixq/mixq/quant"
)

// The vector path of MatMul (kernels in matmul_amd64.s). It computes exactly
// the reference's operations, in the reference's order, for every output:
// vectors run across weight rows, not along a row, so each lane of a vector
// is one output's sequential chain (the per-group sum over the columns in
// ascending order, its product with the scale, the add into lane g mod 32,
// the fold). Nothing is reassociated and nothing is fused, so the bits are
// those of dotRow for any layout: odd and ragged groups, ragged rows, odd
// INT4 rows, any m.
//
// The weights are cut into tiles of 4 vectors of rows (64 rows with
// AVX-512, 32 with AVX2), the unit of work handed to the threads. For each
// tile and chunk of at most mmChunk columns (whole groups), the transposers
// widen INT4 nibbles to bytes and turn each vector's rows column-major, so
// that one VPMOVSXBD loads the codes of a column for all its rows; the
// scales of the chunk are transposed the same way. The chunk is then read
// once per mTile rows of x: every code widened to float32 feeds mTile·4
// independent multiply-add chains (4·4 with AVX-512, 2·4 with AVX2), which
// hides the latency of the adds; a single row of x (decode) gets the 4
// chains of the tile's vectors. The 32 lane accumulators of each output stay
// in memory between groups and are folded by halving at the end of the tile;
// rows of x are taken in blocks of mmMBlock so that they stay small. While a
// worker computes one tile, the kernels prefetch the packed codes of its next
// one into L2 in address order: the transposers read 16 rows in lockstep,
// which the hardware prefetchers follow poorly.

// mmISA is one set of matmul kernels.
type mmISA struct {
	name  string
	lanes int // weight rows per vector; a tile is 4 vectors
	step  int // columns per transposer step
	mTile int // rows of x per gemm call

	trans8, trans4 func(dst *byte, rows *[16]*byte, off, cols int)
	gemv, gemm     func(a *mmArgs)
	fold           func(y, acc *float32)
}

// mmArgs are the arguments of the compute kernels; the assembly reads the
// fields at fixed offsets (gen/matmul_asm.py): keep the order and types.
type mmArgs struct {
	t    [4]*byte   // 0: the tile's code blocks, column-major, lanes bytes per column
	sc   *uint16    // 32: scales of the chunk's groups, [group][tile rows]
	x    *float32   // 40: x at the chunk's first column: one row (gemv), or mTile rows interleaved, [cols][mTile] (gemm)
	_    [3]uintptr // 48: unused
	acc  *float32   // 72: accumulators of the first row of x, [32][tile rows]; row i at +i·32·tile rows
	cols int        // 80: columns in the chunk
	gs   int        // 88: group size
	lane int        // 96: lane of the chunk's first group (advanced by the kernel)
	scOf int        // 104: byte offset of the next group's scales from sc (advanced)
	pf   *byte      // 112: the kernels prefetch from here, one line per column ...
	pfSt int        // 120: ... advancing by this many bytes
}

// mmChunk is the most columns transposed at once: 4096 columns of a
// 64-row tile are 256 KiB of codes, read from the L2 cache once per mTile
// rows of x.
const mmChunk = 4096

// mmScratch is one worker's buffers.
type mmScratch struct {
	rp, sp [16]*byte // row pointers handed to the transposers
	args   mmArgs
	codes  []byte
	stage  []byte
	zero   []byte
	sc     []uint16
	acc    []float32
	y      []float32
	xi     []float32
}

var mmPool = sync.Pool{New: func() any { return new(mmScratch) }}

func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	return s[:n]
}

// mmChunkCols is the width of a column chunk: whole groups, at most
// mmChunk columns unless one group is wider, and an even number of columns
// for INT4 so that every chunk starts on a byte.
func mmChunkCols(l quant.Layout) int {
	gs := l.GroupSize
	n := max(1, mmChunk/gs)
	if l.Precision == quant.INT4 && gs%2 != 0 && n%2 != 0 {
		if n == 1 {
			n = 2
		} else {
			n--
		}
	}
	return n * gs
}

// mmBlockPad separates the code blocks of a tile by more than a multiple of
// 4 KiB, so that the four streams the kernels read do not compete for the
// same L1 cache sets.
const mmBlockPad = 17 * 64

// matmulSIMD is MatMul on the kernels k, the tiles split across threads.
func (b *Backend) matmulSIMD(k *mmISA, y, x []float32, m int, packed []byte, scales []uint16, l quant.Layout, work int) {
	tr := 4 * k.lanes
	tiles := (l.Rows + tr - 1) / tr
	xs := mmPool.Get().(*mmScratch)
	defer mmPool.Put(xs)
	xi := mmInterleave(xs, x, m, l.Cols, k.mTile)
	n := b.chunks(tiles, work)
	if n == 1 {
		s := mmPool.Get().(*mmScratch)
		defer mmPool.Put(s)
		for t := range tiles {
			mmTiles(k, s, y, x, xi, m, packed, scales, l, t, t+1, min(t+1, tiles-1))
		}
		return
	}
	// The workers take tiles one at a time from a shared counter rather
	// than a fixed share each, so that a worker the OS descheduled (the
	// machine is busy) or a slower core does not hold up the others. Each
	// tile's outputs are computed by one worker in the fixed order, so the
	// result does not depend on who took which tile.
	var next atomic.Int64
	parallel(n, 1, n, func(_, _, _ int) {
		s := mmPool.Get().(*mmScratch)
		defer mmPool.Put(s)
		// Each worker claims its next tile before computing the current
		// one, so that it can prefetch it.
		t := int(next.Add(1)) - 1
		for t < tiles {
			tn := int(next.Add(1)) - 1
			mmTiles(k, s, y, x, xi, m, packed, scales, l, t, t+1, min(tn, tiles-1))
			t = tn
		}
	})
}

// mmGemmRows is the number of rows of x the gemm kernel takes, in tiles of
// mt (the last one padded); a last single row goes to the gemv kernel.
func mmGemmRows(m, mt int) int {
	if m%mt == 1 {
		return m - 1
	}
	return m
}

// mmInterleave returns the rows of x that go to the gemm kernel,
// interleaved by tiles of mt rows: xi[t][k][j] = x[min(t·mt+j, m−1)][k],
// so that the kernel reads one stream.
func mmInterleave(s *mmScratch, x []float32, m, cols, mt int) []float32 {
	g := mmGemmRows(m, mt)
	if g == 0 {
		return nil
	}
	nt := (g + mt - 1) / mt
	s.xi = grow(s.xi, nt*mt*cols)
	xi := s.xi
	for t := range nt {
		d := xi[t*mt*cols : (t+1)*mt*cols]
		for j := range mt {
			src := x[min(t*mt+j, m-1)*cols:][:cols]
			for c, v := range src {
				d[c*mt+j] = v
			}
		}
	}
	return xi
}

// mmMBlock is the most rows of x whose accumulators a worker holds at
// once (64 × 8 KiB with AVX-512): larger m is taken in blocks of rows,
// re-reading the tile's codes (re-transposing them when the columns take
// more than one chunk).
const mmMBlock = 64

// mmTiles computes the outputs of the weight rows of tiles [lo, hi); the
// kernels prefetch the codes of tile pf meanwhile.
func mmTiles(k *mmISA, s *mmScratch, y, x, xi []float32, m int, packed []byte, scales []uint16, l quant.Layout, lo, hi, pf int) {
	rows, cols, gs, rb := l.Rows, l.Cols, l.GroupSize, l.RowBytes()
	lanes, step, tr := k.lanes, k.step, 4*k.lanes
	cw := min(mmChunkCols(l), cols)
	cwPad := (cw + step - 1) / step * step
	ngc := (cw + gs - 1) / gs
	stepBytes := step
	if l.Precision == quant.INT4 {
		stepBytes = step / 2
	}
	mb := min(m, mmMBlock)
	bstride := cwPad*lanes + mmBlockPad
	s.codes = grow(s.codes, 4*bstride)
	s.stage = grow(s.stage, lanes*stepBytes)
	s.zero = grow(s.zero, rb)
	clear(s.zero)
	s.sc = grow(s.sc, ngc*tr)
	s.acc = grow(s.acc, (mb+k.mTile)*32*tr)
	s.y = grow(s.y, tr)
	accM := 32 * tr // accumulators of one row of x
	single := cw == cols

	a := &s.args
	for j := range 4 {
		a.t[j] = &s.codes[j*bstride]
	}
	a.gs = gs
	for t := lo; t < hi; t++ {
		n0 := t * tr
		nr := min(tr, rows-n0)
		if single {
			mmPrepare(k, s, packed, scales, l, n0, 0, cols, cwPad, bstride, stepBytes)
		}
		for i0 := 0; i0 < m; i0 += mb {
			i1 := min(i0+mb, m)
			// The accumulators this block uses: its rows, the gemm tiles'
			// padding included.
			g := i0 + mmGemmRows(i1-i0, k.mTile)
			used := max(i1-i0, (g-i0+k.mTile-1)/k.mTile*k.mTile)
			clear(s.acc[:used*accM])
			for c0 := 0; c0 < cols; c0 += cw {
				cn := min(cw, cols-c0)
				if !single {
					mmPrepare(k, s, packed, scales, l, n0, c0, cn, cwPad, bstride, stepBytes)
				}
				g0 := c0 / gs
				a.cols = cn
				// Prefetch the codes of the next tile (pf) in this chunk's
				// share: tile bytes / cols per column.
				a.pfSt = max(1, (tr*rb+cols-1)/cols)
				a.pf = &packed[min(pf*tr*rb+c0*a.pfSt, len(packed)-1)]
				for i := i0; i < g; i += k.mTile {
					// mTile rows of x; a short last tile repeats its last row
					// into spare accumulators.
					a.sc, a.scOf, a.lane, a.acc = &s.sc[0], 0, g0%quant.MatMulLanes, &s.acc[(i-i0)*accM]
					a.x = &xi[i*cols+c0*k.mTile] // tiles of mTile rows from row 0: i is a multiple of mTile
					k.gemm(a)
				}
				if g < i1 {
					a.sc, a.scOf, a.lane, a.acc = &s.sc[0], 0, g0%quant.MatMulLanes, &s.acc[(g-i0)*accM]
					a.x = &x[g*cols+c0]
					k.gemv(a)
				}
			}
			for i := i0; i < i1; i++ {
				acc := &s.acc[(i-i0)*accM]
				if nr == tr {
					k.fold(&y[i*rows+n0], acc)
					continue
				}
				k.fold(&s.y[0], acc)
				copy(y[i*rows+n0:i*rows+n0+nr], s.y[:nr])
			}
		}
	}
}

// mmPrepare transposes the codes of columns [c0, c0+cn) of the tile whose
// first row is n0 into s.codes (4 blocks, bstride apart) and its scales into
// s.sc ([group][tile rows]); rows past the matrix are zeros.
func mmPrepare(k *mmISA, s *mmScratch, packed []byte, scales []uint16, l quant.Layout, n0, c0, cn, cwPad, bstride, stepBytes int) {
	rows, gs, gpr, rb := l.Rows, l.GroupSize, l.GroupsPerRow(), l.RowBytes()
	int4 := l.Precision == quant.INT4
	lanes, step, tr := k.lanes, k.step, 4*k.lanes
	trans := k.trans8
	if int4 {
		trans = k.trans4
	}
	full := cn / step * step
	for j := range 4 {
		rp := &s.rp
		for i := range lanes {
			if r := n0 + j*lanes + i; r < rows {
				rp[i] = &packed[r*rb]
			} else {
				rp[i] = &s.zero[0]
			}
		}
		dst := s.codes[j*bstride : j*bstride+cwPad*lanes]
		off := c0
		if int4 {
			off = c0 / 2
		}
		if full > 0 {
			trans(&dst[0], rp, off, full)
		}
		if rem := cn - full; rem > 0 {
			// The last columns, zero-padded to one step.
			nb, from := rem, off+full
			if int4 {
				nb, from = (rem+1)/2, off+full/2
			}
			sp := &s.sp
			for i := range lanes {
				st := s.stage[i*stepBytes : (i+1)*stepBytes]
				clear(st)
				if r := n0 + j*lanes + i; r < rows {
					copy(st, packed[r*rb+from:r*rb+from+nb])
				}
				sp[i] = &st[0]
			}
			trans(&dst[full*lanes], sp, 0, step)
		}
	}
	g0 := c0 / gs
	ng := (cn + gs - 1) / gs
	sc := s.sc[:ng*tr]
	for r := range tr {
		if n0+r >= rows {
			for gi := range ng {
				sc[gi*tr+r] = 0
			}
			continue
		}
		src := scales[(n0+r)*gpr+g0 : (n0+r)*gpr+g0+ng]
		for gi, v := range src {
			sc[gi*tr+r] = v
		}
	}
}
