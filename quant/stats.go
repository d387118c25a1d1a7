package quant

import (
	"errors"
	"fmt"
)

// Stats holds streaming per-channel statistics of activations: the number of
// tokens seen and, per channel, the running mean and M2 (the sum of squared
// deviations from the mean). Two Stats over disjoint token sets merge
// exactly as defined by Merge, so partial results from batches, files or
// devices combine into one.
type Stats struct {
	Count int64
	Mean  []float64
	M2    []float64
}

// NewStats returns empty statistics for the given number of channels.
func NewStats(channels int) *Stats {
	return &Stats{Mean: make([]float64, channels), M2: make([]float64, channels)}
}

// Channels is the number of channels.
func (s *Stats) Channels() int { return len(s.Mean) }

// Merge folds o into s with Chan et al.'s pairwise update, in binary64, in
// exactly this order of operations for every channel c:
//
//	n     = na + nb                         (integers)
//	d     = mean_b - mean_a
//	mean  = mean_a + (d * nb) / n
//	M2    = (M2_a + M2_b) + ((d * d) * na * nb) / n     (left to right)
//
// If s is empty it becomes a copy of o, and merging an empty o is a no-op,
// so that the result of one batch does not depend on rounding in the merge.
func (s *Stats) Merge(o *Stats) error {
	if len(o.Mean) != len(s.Mean) {
		return fmt.Errorf("cannot merge statistics of %d channels into %d", len(o.Mean), len(s.Mean))
	}
	if o.Count == 0 {
		return nil
	}
	if s.Count == 0 {
		s.Count = o.Count
		copy(s.Mean, o.Mean)
		copy(s.M2, o.M2)
		return nil
	}
	na, nb := float64(s.Count), float64(o.Count)
	n := float64(s.Count + o.Count)
	for c := range s.Mean {
		d := float64(o.Mean[c] - s.Mean[c])
		s.Mean[c] = float64(s.Mean[c] + float64(float64(d*nb)/n))
		t := float64(float64(float64(float64(d*d)*na)*nb) / n)
		s.M2[c] = float64(float64(s.M2[c]+o.M2[c]) + t)
	}
	s.Count += o.Count
	return nil
}

// Variance writes the population variance M2/n of every channel into dst
// (0 when no token was seen).
func (s *Stats) Variance(dst []float64) {
	for c := range s.M2 {
		if s.Count == 0 {
			dst[c] = 0
			continue
		}
		dst[c] = s.M2[c] / float64(s.Count)
	}
}

// WelfordStep is one token's update of one channel's batch statistics, in
// binary64, where n is the count including x (1 for the first token):
//
//	d    = x - mean
//	mean = mean + d / n
//	M2   = M2 + d * (x - mean)     (with the updated mean)
//
// The batch is walked in ascending token order, starting from mean = M2 = 0.
func WelfordStep(mean, m2 float64, x float32, n int64) (float64, float64) {
	xf := float64(x)
	d := float64(xf - mean)
	mean = float64(mean + float64(d/float64(n)))
	m2 = float64(m2 + float64(d*float64(xf-mean)))
	return mean, m2
}

// CheckBatch verifies a ChannelStats call: s is non-nil and consistent, and
// x holds tokens rows of s.Channels() activations.
func CheckBatch(s *Stats, x []float32, tokens int) error {
	if s == nil {
		return errors.New("channelstats: nil statistics")
	}
	ch := s.Channels()
	switch {
	case len(s.M2) != ch:
		return fmt.Errorf("channelstats: statistics have %d means and %d M2", ch, len(s.M2))
	case tokens < 0:
		return fmt.Errorf("channelstats: negative token count %d", tokens)
	case ch == 0 && len(x) != 0,
		ch > 0 && (len(x)%ch != 0 || len(x)/ch != tokens):
		return fmt.Errorf("channelstats: x has %d elements, want tokens×channels = %d×%d", len(x), tokens, ch)
	}
	return nil
}
