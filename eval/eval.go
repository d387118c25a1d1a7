package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// Stats of one model on the evaluation sequences.
type Stats struct {
	Perplexity    float64 `json:"perplexity"`
	MeanNLL       float64 `json:"mean_nll"`
	TokensPerSec  float64 `json:"tokens_per_sec"`
	ForwardTokens int     `json:"forward_tokens"`
}

// Result compares a model (and optionally a quantized one) on sequences.
type Result struct {
	Sequences int `json:"sequences"`
	// Scored is the number of predicted positions (length−1 per sequence).
	Scored    int    `json:"scored_positions"`
	Original  Stats  `json:"original"`
	Quantized *Stats `json:"quantized,omitempty"`
	// DeltaPerplexityPct is 100·(ppl_q − ppl)/ppl.
	DeltaPerplexityPct float64 `json:"delta_perplexity_pct,omitempty"`
	KLMean             float64 `json:"kl_mean,omitempty"`
	KLP99              float64 `json:"kl_p99,omitempty"`
	KLMax              float64 `json:"kl_max,omitempty"`
	Top1Agreement      float64 `json:"top1_agreement,omitempty"`
}

// Options for Evaluate.
type Options struct {
	// Batch is how many sequences run together (default: all of them, up to 8).
	Batch int
	// Logits, when set, receives the original model's logits of each sequence
	// ([len][vocab], position-major) as they are computed.
	Logits func(seq int, logits []float32)
	// Progress, when set, is called after each forward pass with the
	// number of tokens it ran; the passes of both models add up to
	// Tokens(seqs) (twice that with a quantized model).
	Progress func(deltaTokens int)
}

// Tokens is the number of tokens of all sequences.
func Tokens(seqs [][]int) int {
	n := 0
	for _, s := range seqs {
		n += len(s)
	}
	return n
}

// CheckSequences refuses, as input errors (quant.ErrInput) naming the
// sequence, position and value, sequences the model cannot be run on: no
// sequences, a sequence shorter than minLen, longer than the model's
// max_position_embeddings (positions past it were never trained, so their
// numbers mean nothing, and attention grows with the square of the
// length), or a token outside the vocabulary.
func CheckSequences(m *model.Model, seqs [][]int, minLen int) error {
	if len(seqs) == 0 {
		return quant.InputError(errors.New("no token sequences"))
	}
	c := m.Config
	for i, s := range seqs {
		if len(s) < minLen {
			return quant.InputError(fmt.Errorf("sequence %d has %d tokens; need at least %d", i, len(s), minLen))
		}
		if c.MaxPositions > 0 && len(s) > c.MaxPositions {
			return quant.InputError(fmt.Errorf("sequence %d has %d tokens, more than the model's max_position_embeddings %d; cut it into shorter sequences", i, len(s), c.MaxPositions))
		}
		for j, tok := range s {
			if tok < 0 || tok >= c.Vocab {
				return quant.InputError(fmt.Errorf("sequence %d position %d: token %d is outside the vocabulary [0, %d)", i, j, tok, c.Vocab))
			}
		}
	}
	return nil
}

// Evaluate is EvaluateContext without cancellation.
func Evaluate(ref, q *model.Model, seqs [][]int, opt Options) (*Result, error) {
	return EvaluateContext(context.Background(), ref, q, seqs, opt)
}

// EvaluateContext runs ref (and q, when not nil) over every sequence. When
// ctx is done it stops within a forward pass's check (see
// model.Session.ForwardContext) or between sequences while scoring, and
// returns an error wrapping the context's (errors.Is(err,
// context.Canceled)); Options.Logits then has seen only complete sequences.
// Sequences that CheckSequences refuses (at least 2 tokens each) are input
// errors.
func EvaluateContext(ctx context.Context, ref, q *model.Model, seqs [][]int, opt Options) (*Result, error) {
	vocab := ref.Config.Vocab
	if q != nil && q.Config.Vocab != vocab {
		return nil, quant.InputError(fmt.Errorf("vocabularies differ: %d vs %d", vocab, q.Config.Vocab))
	}
	if err := CheckSequences(ref, seqs, 2); err != nil {
		return nil, err
	}
	if q != nil {
		if err := CheckSequences(q, seqs, 2); err != nil {
			return nil, fmt.Errorf("quantized model: %w", err)
		}
	}
	progress := func(n int) {
		if opt.Progress != nil {
			opt.Progress(n)
		}
	}
	res := &Result{Sequences: len(seqs)}
	var nllRef, nllQ float64
	var kls []float64
	agree := 0
	var tRef, tQ time.Duration
	nTok := 0
	batch := opt.Batch
	if batch <= 0 {
		batch = min(8, len(seqs))
	}
	for lo := 0; lo < len(seqs); lo += batch {
		hi := min(len(seqs), lo+batch)
		// Group by length: one Forward call needs equal lengths.
		for _, grp := range GroupByLength(seqs[lo:hi]) {
			T := len(grp[0].Tokens)
			lr, dr, err := run(ctx, ref, grp, progress)
			if err != nil {
				return nil, fmt.Errorf("original model: %w", err)
			}
			tRef += dr
			var lq []float32
			if q != nil {
				var dq time.Duration
				if lq, dq, err = run(ctx, q, grp, progress); err != nil {
					return nil, fmt.Errorf("quantized model: %w", err)
				}
				tQ += dq
			}
			nTok += len(grp) * T
			for b, sq := range grp {
				// Scoring costs a few exponentials per logit: check between
				// sequences, before any of their logits are handed out.
				if err := stop.Err(ctx); err != nil {
					return nil, err
				}
				if opt.Logits != nil {
					opt.Logits(lo+sq.Index, lr[b*T*vocab:(b+1)*T*vocab])
				}
				for p := 0; p+1 < T; p++ {
					next := sq.Tokens[p+1]
					rl := lr[(b*T+p)*vocab : (b*T+p+1)*vocab]
					lpR := logSoftmax(rl)
					nllRef -= lpR[next]
					res.Scored++
					if q == nil {
						continue
					}
					ql := lq[(b*T+p)*vocab : (b*T+p+1)*vocab]
					lpQ := logSoftmax(ql)
					nllQ -= lpQ[next]
					kls = append(kls, KL(lpR, lpQ))
					if Argmax(rl) == Argmax(ql) {
						agree++
					}
				}
			}
		}
	}
	n := float64(res.Scored)
	res.Original = Stats{MeanNLL: nllRef / n, Perplexity: math.Exp(nllRef / n), ForwardTokens: nTok, TokensPerSec: float64(nTok) / tRef.Seconds()}
	if q != nil {
		st := Stats{MeanNLL: nllQ / n, Perplexity: math.Exp(nllQ / n), ForwardTokens: nTok, TokensPerSec: float64(nTok) / tQ.Seconds()}
		res.Compared(st, kls, agree)
	}
	return res, nil
}

// Compared fills in the comparison fields of r (Original and Scored set)
// from the quantized model's statistics, the KL divergence of every
// scored position in scoring order (sorted here, in place) and the number
// of positions whose top-1 tokens agree, as Evaluate does.
func (r *Result) Compared(q Stats, kls []float64, agree int) {
	r.Quantized = &q
	r.DeltaPerplexityPct = 100 * (q.Perplexity - r.Original.Perplexity) / r.Original.Perplexity
	n := float64(r.Scored)
	var sum float64
	for _, k := range kls {
		sum += k
	}
	r.KLMean = sum / n
	slices.Sort(kls)
	r.KLP99 = kls[min(len(kls)-1, int(math.Ceil(0.99*float64(len(kls))))-1)]
	r.KLMax = kls[len(kls)-1]
	r.Top1Agreement = float64(agree) / n
}

// Indexed is a sequence with its position in the caller's list.
type Indexed struct {
	Index  int
	Tokens []int
}

// GroupByLength splits sequences into groups of equal length, keeping
// order, since one forward pass of a batch needs equal lengths.
func GroupByLength(seqs [][]int) [][]Indexed {
	var groups [][]Indexed
	pos := map[int]int{}
	for i, s := range seqs {
		g, ok := pos[len(s)]
		if !ok {
			g = len(groups)
			pos[len(s)] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], Indexed{i, s})
	}
	return groups
}

// run computes the logits of a group of equal-length sequences, reporting
// its tokens to progress layer by layer (all of them once it is done).
func run(ctx context.Context, m *model.Model, grp []Indexed, progress func(int)) ([]float32, time.Duration, error) {
	toks := make([][]int, len(grp))
	for i, g := range grp {
		toks[i] = g.Tokens
	}
	s := m.NewSession(len(grp), len(grp[0].Tokens))
	s.OnLayer = model.LayerProgress(len(grp)*len(grp[0].Tokens), progress)
	t0 := time.Now()
	l, err := s.ForwardContext(ctx, toks, nil)
	return l, time.Since(t0), err
}

// logSoftmax returns log p in float64.
func logSoftmax(logits []float32) []float64 {
	return LogSoftmax(make([]float64, len(logits)), logits)
}

// LogSoftmax writes log p of one position's logits into out (at least
// len(logits) long), in binary64 with the maximum subtracted, and returns
// out[:len(logits)]. Every score of this package is computed from it, so
// other measurements that use it (and KL) agree with eval to the bit.
func LogSoftmax(out []float64, logits []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	out = out[:len(logits)]
	for i, v := range logits {
		out[i] = float64(v) - lse
	}
	return out
}

// KL is KL(P‖Q) = Σ p (log p − log q) of one position, from the
// log-probabilities LogSoftmax gives.
func KL(lp, lq []float64) float64 {
	var s float64
	for i := range lp {
		p := math.Exp(lp[i])
		if p > 0 {
			s += p * (lp[i] - lq[i])
		}
	}
	return max(s, 0) // rounding can leave a tiny negative for equal distributions
}

// Argmax is the index of the first of the largest logits: the top-1
// token top-1 agreement compares.
func Argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// Sample is SampleContext without cancellation or progress.
func Sample(m *model.Model, n, seqLen, bos int, seed uint64) ([][]int, error) {
	return SampleContext(context.Background(), m, n, seqLen, bos, seed, nil)
}

// SampleContext draws n sequences of length seqLen from m at temperature
// 1, starting from bos. The same seed gives the same sequences. It stops
// when ctx is done (an error wrapping the context's), and calls progress,
// when not nil, with the n tokens each of the seqLen−1 decoding steps
// runs. A length past the model's max_position_embeddings, or a bos
// outside the vocabulary, is an input error.
func SampleContext(ctx context.Context, m *model.Model, n, seqLen, bos int, seed uint64, progress func(deltaTokens int)) ([][]int, error) {
	if n < 1 || seqLen < 2 {
		return nil, quant.InputError(fmt.Errorf("sampling needs n ≥ 1 and length ≥ 2 (got %d, %d)", n, seqLen))
	}
	if mp := m.Config.MaxPositions; mp > 0 && seqLen > mp {
		return nil, quant.InputError(fmt.Errorf("sampling: length %d is more than the model's max_position_embeddings %d", seqLen, mp))
	}
	vocab := m.Config.Vocab
	if bos < 0 || bos >= vocab {
		return nil, quant.InputError(fmt.Errorf("sampling: start token %d is outside the vocabulary [0, %d)", bos, vocab))
	}
	r := rand.New(rand.NewPCG(seed, 0x73616d706c65))
	seqs := make([][]int, n)
	for i := range seqs {
		seqs[i] = []int{bos}
	}
	s := m.NewSession(n, seqLen)
	next := make([][]int, n)
	for i := range next {
		next[i] = []int{bos}
	}
	for len(seqs[0]) < seqLen {
		logits, err := s.ForwardContext(ctx, next, nil)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(n)
		}
		for b := range seqs {
			lp := logSoftmax(logits[b*vocab : (b+1)*vocab])
			u := r.Float64()
			tok := vocab - 1
			var c float64
			for j, l := range lp {
				c += math.Exp(l)
				if u < c {
					tok = j
					break
				}
			}
			seqs[b] = append(seqs[b], tok)
			next[b] = []int{tok}
		}
	}
	return seqs, nil
}
