package cpu

import (
	"fmt"
	"sync"

	"github.com/mixq/mixq/quant"
)

// ChannelStats reduces x, a row-major [tokens][s.Channels()] batch, to
// per-channel Welford statistics and merges them into s:
//
//	for each channel c: mean, M2 = 0, 0
//	    for t = 0 .. tokens-1: mean, M2 = WelfordStep(mean, M2, x[t][c], t+1)
//	s.Merge(&Stats{Count: tokens, Mean: mean, M2: M2})
//
// Channels are split across goroutines; each walks the tokens in order and,
// for every token, its contiguous range of channels.
func (b *Backend) ChannelStats(s *quant.Stats, x []float32, tokens int) error {
	if err := quant.CheckBatch(s, x, tokens); err != nil {
		return fmt.Errorf("cpu: %w", err)
	}
	ch := s.Channels()
	if tokens == 0 {
		return nil // an empty batch merges as a no-op
	}
	bp := statsScratch.Get().(*[]float64)
	defer statsScratch.Put(bp)
	if cap(*bp) < 2*ch {
		*bp = make([]float64, 2*ch)
	}
	buf := (*bp)[:2*ch]
	clear(buf)
	batch := quant.Stats{Count: int64(tokens), Mean: buf[:ch:ch], M2: buf[ch:]}
	// Align chunks to 8 channels (a cache line of float64) to keep workers
	// off each other's lines.
	parallel(ch, 8, b.chunks((ch+7)/8, len(x)), func(_, lo, hi int) {
		welford(batch.Mean[lo:hi], batch.M2[lo:hi], x, ch, lo, tokens)
	})
	return s.Merge(&batch)
}

var statsScratch = sync.Pool{New: func() any { return new([]float64) }}

// welford runs the batch update of channels [c0, c0+len(mean)).
func welford(mean, m2 []float64, x []float32, ch, c0, tokens int) {
	m2 = m2[:len(mean)]
	for t := range tokens {
		row := x[t*ch+c0 : t*ch+c0+len(mean)]
		row = row[:len(mean)]
		n := int64(t + 1)
		for c, v := range row {
			mean[c], m2[c] = quant.WelfordStep(mean[c], m2[c], v, n)
		}
	}
}
