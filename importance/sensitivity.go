package importance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/gptq"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// DefaultSensitivitySequences bounds the calibration sequences the
// sensitivity measurement runs: each matrix costs a pass over them from
// its layer on.
const DefaultSensitivitySequences = 8

// Sensitivity is the measured damage of storing each matrix alone at one
// reference precision: the mean over the calibration positions of
// KL(model ‖ model with that one matrix quantized), the rest left as they
// are. Analyze turns it into a sensitivity per unit of relative error
// (KL / RelError of the same candidate) and predicts every candidate's
// damage from it (see the package documentation, "Measured sensitivity").
type Sensitivity struct {
	// Precision and GroupSize of the reference candidate.
	Precision quant.Precision
	GroupSize int
	// Search: the reference candidate was rounded with the scale search.
	Search bool
	// KL by weight name.
	KL map[string]float64
	// Positions is the number of positions the KL is averaged over.
	Positions int
}

// SensitivityOptions configure MeasureSensitivity.
type SensitivityOptions struct {
	// Precision and GroupSize of the reference candidate (INT4 and 128
	// when zero).
	Precision quant.Precision
	GroupSize int
	// Search rounds with gptq.SearchScales, weighted by Diag(name) (the
	// layer's E[x²], damped here as for the quantizer; nil: unweighted),
	// instead of absmax round to nearest.
	Search bool
	Diag   func(name string) []float64
	// Backend quantizes and dequantizes the reference (cpu.New(0) when nil).
	Backend quant.Backend
	// Progress is called after each matrix with the number measured and
	// the total.
	Progress func(done, total int)
}

// MeasureSensitivity runs seqs through m once as it is, then once per
// matrix with that matrix alone replaced by its quantized-and-dequantized
// reference form, from the matrix's layer on (earlier layers' outputs are
// kept), and returns the mean KL of each. m must hold binary32 weights;
// they are restored before it returns. It stops with ctx.
func MeasureSensitivity(ctx context.Context, m *model.Model, seqs [][]int, opt SensitivityOptions) (*Sensitivity, error) {
	if opt.Precision == 0 {
		opt.Precision = quant.INT4
	}
	if opt.GroupSize == 0 {
		opt.GroupSize = quant.DefaultGroupSize
	}
	if !opt.Precision.Quantized() {
		return nil, fmt.Errorf("sensitivity: reference precision %s is not INT8 or INT4", opt.Precision)
	}
	be := opt.Backend
	if be == nil {
		be = cpu.New(0)
	}
	st, err := m.NewStepper(seqs)
	if err != nil {
		return nil, err
	}
	// Hidden states at the input of every layer (states[li]) and after
	// the last one, and the reference log-probabilities.
	L := m.Layers()
	states := make([][][]float32, L+1)
	for li := 0; li < L; li++ {
		states[li] = st.States()
		if err := st.Layer(ctx, li, "", true, nil, nil); err != nil {
			return nil, err
		}
	}
	states[L] = st.States()
	ref := make([][]float32, len(seqs))
	positions := 0
	if err := st.Logits(ctx, func(i int, logits []float32) error {
		ref[i] = logSoftmaxRows(nil, logits, m.Config.Vocab)
		positions += len(logits) / m.Config.Vocab
		return nil
	}); err != nil {
		return nil, err
	}

	type target struct {
		name  string
		layer int // first layer whose input changes; -1: the embedding
	}
	var targets []target
	emb, head := m.EmbeddingName(), m.HeadName()
	targets = append(targets, target{emb, -1})
	for li := 0; li < L; li++ {
		for _, stage := range m.Stages(li) {
			for _, n := range stage {
				targets = append(targets, target{n, li})
			}
		}
	}
	if head != emb {
		targets = append(targets, target{head, L})
	}
	out := &Sensitivity{Precision: opt.Precision, GroupSize: opt.GroupSize, Search: opt.Search, KL: map[string]float64{}, Positions: positions}
	for k, tg := range targets {
		if err := stop.Err(ctx); err != nil {
			return nil, err
		}
		w, rows, cols, ok := m.Weights(tg.name)
		if !ok {
			return nil, fmt.Errorf("sensitivity: %s is not held as binary32", tg.name)
		}
		var diag []float64
		if opt.Search && opt.Diag != nil {
			if d := opt.Diag(tg.name); len(d) == cols {
				diag = gptq.Damped(d, 0)
			}
		}
		l := quant.Layout{Rows: rows, Cols: cols, GroupSize: opt.GroupSize, Precision: opt.Precision}
		q := make([]float32, len(w))
		if err := quantRoundTrip(be, q, make([]byte, l.PackedBytes()), make([]uint16, l.NumScales()), w, l, opt.Search, diag); err != nil {
			return nil, &quant.TensorError{Tensor: tg.name, Err: err}
		}
		orig, err := m.SwapWeights(tg.name, q)
		if err != nil {
			return nil, err
		}
		kl, err := func() (float64, error) {
			defer m.SwapWeights(tg.name, orig)
			s := st
			from := tg.layer
			if from < 0 {
				// The embedding is looked up: embed again.
				if s, err = m.NewStepper(seqs); err != nil {
					return 0, err
				}
				from = 0
			} else if err := s.SetStates(states[from]); err != nil {
				return 0, err
			}
			for li := from; li < L; li++ {
				if err := s.Layer(ctx, li, "", true, nil, nil); err != nil {
					return 0, err
				}
			}
			var sum float64
			err := s.Logits(ctx, func(i int, logits []float32) error {
				sum += klRows(ref[i], logits, m.Config.Vocab)
				return nil
			})
			return sum / float64(positions), err
		}()
		if err != nil {
			return nil, err
		}
		if math.IsNaN(kl) || math.IsInf(kl, 0) {
			return nil, &quant.TensorError{Tensor: tg.name, Err: errors.New("sensitivity: the KL divergence is not finite")}
		}
		out.KL[tg.name] = kl
		if opt.Progress != nil {
			opt.Progress(k+1, len(targets))
		}
	}
	return out, nil
}

// logSoftmaxRows is eval.LogSoftmax of each row of logits, stored as
// binary32 in dst (grown as needed): the reference of every later pass,
// kept at half the size.
func logSoftmaxRows(dst, logits []float32, vocab int) []float32 {
	dst = slices.Grow(dst[:0], len(logits))[:len(logits)]
	lp := make([]float64, vocab)
	for r := 0; r+vocab <= len(logits); r += vocab {
		for j, v := range eval.LogSoftmax(lp, logits[r:r+vocab]) {
			dst[r+j] = float32(v)
		}
	}
	return dst
}

// klRows is Σ over rows of eval.KL(p ‖ q), from p's stored
// log-probabilities and q's logits.
func klRows(lp, q []float32, vocab int) float64 {
	var total float64
	p, lq := make([]float64, vocab), make([]float64, vocab)
	for r := 0; r+vocab <= len(lp); r += vocab {
		for j, v := range lp[r : r+vocab] {
			p[j] = float64(v)
		}
		total += eval.KL(p, eval.LogSoftmax(lq, q[r:r+vocab]))
	}
	return total
}

// SensitivityWork is about how many multiply-adds MeasureSensitivity
// spends on m and seqs: for every matrix, its layer and the ones after it,
// and the head, over every token (attention's own products left out).
func SensitivityWork(m *model.Model, seqs [][]int) int64 {
	var tokens int64
	for _, s := range seqs {
		tokens += int64(len(s))
	}
	size := func(name string) int64 {
		_, r, c, _ := m.Weights(name)
		return int64(r) * int64(c)
	}
	L := m.Layers()
	suffix := make([]int64, L+1) // parameters of layers li.. L-1
	count := make([]int64, L)    // matrices of layer li
	for li := L - 1; li >= 0; li-- {
		var p int64
		for _, st := range m.Stages(li) {
			for _, n := range st {
				p += size(n)
				count[li]++
			}
		}
		suffix[li] = suffix[li+1] + p
	}
	head := size(m.HeadName())
	work := (suffix[0] + head) * tokens // the reference pass, and the embedding's
	for li := range L {
		work += count[li] * (suffix[li] + head) * tokens
	}
	if m.HeadName() != m.EmbeddingName() {
		work += head * tokens
	}
	return work
}
