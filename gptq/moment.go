package gptq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/mixq/mixq/internal/par"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/quant"
)

// ChunkTokens is the number of consecutive tokens of one Add call that are
// summed in binary64 before the sum is folded, exactly, into the fixed-point
// total. Chunks start at the first token of every Add call.
const ChunkTokens = 64

// fracBits is the position of the binary point of the fixed-point total:
// a chunk sum v is stored as trunc(v·2^fracBits), a 128-bit integer.
const fracBits = 64

// maxChunkSum bounds |chunk sum| so that 2^23 chunks (2^29 tokens) cannot
// overflow the 128-bit total: 2^40·2^64·2^23 = 2^127.
const maxChunkSum = 1 << 40

// maxChunks is the number of chunks a total can hold without overflow.
const maxChunks = 1 << 23

// Moment accumulates the uncentred second moment H = Σ_t x_t x_tᵀ of a
// stream of activation rows x_t ∈ R^K (the input of one linear layer) and
// the number of rows, so that E[x xᵀ] = H/n.
//
// The total is exact given its chunks, whatever order they are merged in:
// each chunk of at most ChunkTokens consecutive rows of one Add call is
// reduced in binary64 in a fixed order (for entry (i, j), rows in
// ascending order; every product x_ti·x_tj of binary32 values is exact in
// binary64), the chunk sum is truncated once to a 128-bit fixed-point
// integer with 64 fractional bits, and the integers are added exactly.
// Integer addition being associative, two Moments merged give the bits of
// one Moment that saw the same chunks: one pass over a stream equals the
// merge of passes over two parts of it whenever the cut falls at a chunk
// boundary (a multiple of ChunkTokens rows into an Add call, or between
// calls). Only the lower triangle (j ≤ i) is stored, packed as in Sym:
// 16·K(K+1)/2 bytes (969 MB at K = 11008), which TakeMean turns, in
// place, into H and the factorisation's working storage.
type Moment struct {
	k      int
	n      int64
	chunks int64
	// fx holds the fixed-point totals: the high words (two's complement)
	// of the packed lower triangle in fx[:T], the low words in fx[T:].
	fx []uint64
	xs []float64
}

// NewMoment returns an empty accumulator for rows of k channels.
func NewMoment(k int) *Moment {
	return &Moment{k: k, fx: make([]uint64, 2*tri(k))}
}

func (m *Moment) words() (hi, lo []uint64) {
	t := tri(m.k)
	return m.fx[:t], m.fx[t:]
}

// Channels is K.
func (m *Moment) Channels() int { return m.k }

// Tokens is the number of rows accumulated.
func (m *Moment) Tokens() int64 { return m.n }

// NonFiniteActivationError reports a NaN or ±Inf in calibration
// activations; Token and Channel locate the first one of the batch.
type NonFiniteActivationError struct {
	Token, Channel int
	Value          float32
}

func (e *NonFiniteActivationError) Error() string {
	return fmt.Sprintf("non-finite activation %v at token %d, channel %d", e.Value, e.Token, e.Channel)
}

// Add accumulates tokens rows of x (row-major [tokens, K]). A non-finite
// value is a *NonFiniteActivationError and leaves m unchanged; so does a
// chunk whose sums exceed 2^40 in magnitude (activations of order 10^5).
// The work is split over up to workers goroutines (0: one) by rows of H,
// which does not change any result.
func (m *Moment) Add(x []float32, tokens, workers int) error {
	return m.AddContext(context.Background(), x, tokens, workers)
}

// AddContext is Add that stops when ctx is done (checking every 256 rows
// of H of every chunk, well under a second at K = 11008, where one chunk of
// 64 tokens is about 4·10⁹ multiply-adds) with an error wrapping ctx's
// cause; a stopped moment is spent: it holds part of a chunk, and every
// later call fails.
func (m *Moment) AddContext(ctx context.Context, x []float32, tokens, workers int) error {
	k := m.k
	if tokens < 0 || len(x) != tokens*k {
		return fmt.Errorf("moment: %d values for %d tokens of %d channels", len(x), tokens, k)
	}
	for i, v := range x {
		if !quant.IsFinite(v) {
			return &NonFiniteActivationError{Token: i / k, Channel: i % k, Value: v}
		}
	}
	nch := int64((tokens + ChunkTokens - 1) / ChunkTokens)
	if m.chunks+nch > maxChunks {
		return fmt.Errorf("moment: more than %d chunks of %d tokens", maxChunks, ChunkTokens)
	}
	if m.fx == nil {
		return errors.New("moment: already taken by TakeMean, or stopped")
	}
	if m.xs == nil {
		m.xs = make([]float64, ChunkTokens*k)
	}
	// |Σ_t x_ti·x_tj| ≤ max_i Σ_t x_ti² (Cauchy–Schwarz), so checking the
	// diagonal of every chunk first keeps m unchanged on an overflow.
	for t0 := 0; t0 < tokens; t0 += ChunkTokens {
		t1 := min(tokens, t0+ChunkTokens)
		for c := range k {
			var d float64
			for t := t0; t < t1; t++ {
				v := float64(x[t*k+c])
				d += v * v
			}
			if d >= maxChunkSum/2 {
				return fmt.Errorf("moment: channel %d sums to %g over tokens %d..%d: activations too large", c, d, t0, t1-1)
			}
		}
	}
	for t0 := 0; t0 < tokens; t0 += ChunkTokens {
		t1 := min(tokens, t0+ChunkTokens)
		if !m.chunkSum(ctx, x[t0*k:t1*k], t1-t0, workers) {
			m.fx, m.xs = nil, nil
			return fmt.Errorf("moment: %w", stop.Err(ctx))
		}
	}
	m.n += int64(tokens)
	m.chunks += nch
	return nil
}

// fold adds the truncated fixed-point value of every entry of p, a chunk
// sum of row i, to the total.
func (m *Moment) fold(p []float64, i int) {
	hi, lo := m.words()
	o := tri(i)
	hi, lo = hi[o:o+len(p)], lo[o:o+len(p)]
	for j, v := range p {
		h, l := toFixed(v)
		var c uint64
		lo[j], c = bits.Add64(lo[j], l, 0)
		hi[j] += h + c
	}
}

// chunkSum adds Σ_t x_t x_tᵀ over the n ≤ ChunkTokens rows of x to the
// total: for every entry the products are added in ascending t, from +0,
// and the sum is folded; each goroutine folds its rows of the triangle as
// it goes, so no chunk-sized buffer is held.
func (m *Moment) chunkSum(ctx context.Context, x []float32, n, workers int) bool {
	k := m.k
	xs := m.xs[:n*k]
	for i, v := range x {
		xs[i] = float64(v)
	}
	work := n * tri(k)
	w := max(1, min(workers, work>>16))
	// Rows of the triangle grow longer: cut the rows so chunks hold about
	// the same number of entries (row i has i+1), which only moves work.
	var stopped atomic.Bool
	par.Split(w, 1, w, func(_, c0, c1 int) {
		p := make([]float64, k)
		for c := c0; c < c1; c++ {
			r0, r1 := triRows(k, c, w), triRows(k, c+1, w)
			for i := r0; i < r1; i++ {
				if (i-r0)%256 == 0 && ctx.Err() != nil {
					stopped.Store(true)
					return
				}
				rowSum(p[:i+1], xs, n, k, i)
				m.fold(p[:i+1], i)
			}
		}
	})
	return !stopped.Load()
}

// triRows is the first row of part c of w of a triangle of k rows cut into
// parts of about equal area.
func triRows(k, c, w int) int {
	if c >= w {
		return k
	}
	return int(float64(k) * math.Sqrt(float64(c)/float64(w)))
}

// rowSum computes row i of the chunk sum: p[j] = Σ_t xs[t][i]·xs[t][j] for
// j ≤ i, each in ascending t. Four tokens share each load and store of p;
// the sequence of additions per entry is the same as one token at a time.
func rowSum(p, xs []float64, n, k, i int) {
	p = p[:i+1]
	clear(p)
	t := 0
	for ; t+4 <= n; t += 4 {
		x0 := xs[t*k : t*k+i+1]
		x1 := xs[(t+1)*k : (t+1)*k+i+1][:len(x0)]
		x2 := xs[(t+2)*k : (t+2)*k+i+1][:len(x0)]
		x3 := xs[(t+3)*k : (t+3)*k+i+1][:len(x0)]
		a0, a1, a2, a3 := x0[i], x1[i], x2[i], x3[i]
		for j := range p {
			v := p[j]
			v += float64(a0 * x0[j])
			v += float64(a1 * x1[j])
			v += float64(a2 * x2[j])
			v += float64(a3 * x3[j])
			p[j] = v
		}
	}
	for ; t < n; t++ {
		x0 := xs[t*k : t*k+i+1]
		a := x0[i]
		for j := range p {
			p[j] += float64(a * x0[j])
		}
	}
}

// toFixed is trunc(v·2^64) as a two's complement 128-bit integer, for
// |v| < 2^40 (so the result needs at most 105 bits).
func toFixed(v float64) (hi, lo uint64) {
	if v == 0 {
		return 0, 0
	}
	b := math.Float64bits(v)
	e := int(b>>52) & 0x7ff
	mant := b & (1<<52 - 1)
	if e == 0 {
		e = 1
	} else {
		mant |= 1 << 52
	}
	// |v| = mant·2^(e-1075), so |v|·2^64 = mant·2^sh.
	sh := e - 1075 + fracBits
	switch {
	case sh >= 64:
		hi = mant << (sh - 64)
	case sh >= 0:
		lo = mant << sh
		if sh > 0 {
			hi = mant >> (64 - sh)
		}
	case sh > -64:
		lo = mant >> -sh
	}
	if b>>63 != 0 {
		lo, hi = ^lo+1, ^hi
		if lo == 0 {
			hi++
		}
	}
	return hi, lo
}

// fromFixed converts a 128-bit fixed-point value back to binary64 (rounded).
func fromFixed(hi int64, lo uint64) float64 {
	neg := hi < 0
	h, l := uint64(hi), lo
	if neg {
		l, h = ^l+1, ^h
		if l == 0 {
			h++
		}
	}
	v := (float64(h)*0x1p64 + float64(l)) * 0x1p-64
	if neg {
		return -v
	}
	return v
}

// Merge adds o's totals to m. Both must have the same number of channels.
func (m *Moment) Merge(o *Moment) error {
	if o.k != m.k {
		return fmt.Errorf("moment: merging %d channels into %d", o.k, m.k)
	}
	if m.fx == nil || o.fx == nil {
		return errors.New("moment: already taken by TakeMean")
	}
	if m.chunks+o.chunks > maxChunks {
		return fmt.Errorf("moment: more than %d chunks of %d tokens", maxChunks, ChunkTokens)
	}
	mh, ml := m.words()
	oh, ol := o.words()
	for i := range ml {
		var c uint64
		ml[i], c = bits.Add64(ml[i], ol[i], 0)
		mh[i] += oh[i] + c
	}
	m.n += o.n
	m.chunks += o.chunks
	return nil
}

// Equal reports whether m and o hold the same totals, bit for bit.
func (m *Moment) Equal(o *Moment) bool {
	if m.k != o.k || m.n != o.n || (m.fx == nil) != (o.fx == nil) {
		return false
	}
	for i := range m.fx {
		if m.fx[i] != o.fx[i] {
			return false
		}
	}
	return true
}

// Mean returns E[x xᵀ] = H/n as a full, symmetric, row-major K×K matrix,
// or all zeros when no token was added (8·K² bytes: for small K and
// tests; TakeMean is what the quantizer uses).
func (m *Moment) Mean() []float64 {
	k := m.k
	out := make([]float64, k*k)
	if m.n == 0 || m.fx == nil {
		return out
	}
	hi, lo := m.words()
	n := float64(m.n)
	for i := range k {
		for j := 0; j <= i; j++ {
			t := tri(i) + j
			v := fromFixed(int64(hi[t]), lo[t]) / n
			out[i*k+j], out[j*k+i] = v, v
		}
	}
	return out
}

// TakeMean returns E[x xᵀ] = H/n (zeros when no token was added) as a
// Sym, converting the totals in place: the high words become H's entries,
// with the same values as Mean's, and the low words the Sym's spare
// buffer, which NewFactor works in. m is emptied (Tokens and Channels
// stay; Add, Merge and Mean no longer apply), so H and its factor take no
// more memory than the moment did.
func (m *Moment) TakeMean() *Sym {
	if m.fx == nil {
		return NewSym(m.k)
	}
	hi, lo := m.words()
	n := float64(m.n)
	h := unsafe.Slice((*float64)(unsafe.Pointer(unsafe.SliceData(hi))), len(hi))
	for t := range hi {
		v := 0.0
		if m.n != 0 {
			v = fromFixed(int64(hi[t]), lo[t]) / n
		}
		h[t] = v
	}
	spare := unsafe.Slice((*float64)(unsafe.Pointer(unsafe.SliceData(lo))), len(lo))
	m.fx, m.xs = nil, nil
	return &Sym{k: m.k, data: h, spare: spare}
}
