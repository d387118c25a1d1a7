package model

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/quant"
)

// Stepper runs a fixed set of calibration sequences through the model one
// decoder layer at a time, keeping each sequence's hidden state between
// layers, so that a caller can quantize a layer's weights (SetQuantized)
// before the next layer sees its output. Each sequence runs alone, at
// positions 0…T−1, with exactly the arithmetic of Forward. Memory: the
// hidden states, tokens × Hidden binary32 values.
type Stepper struct {
	m *Model
	s *Session
	x [][]float32 // per sequence, [T, Hidden]
}

// errStageDone ends a staged run once its last observed linear was seen.
var errStageDone = errors.New("model: stage complete")

// NewStepper embeds the sequences (with the embedding as it is now: call
// SetQuantized on the embedding first for the quantized one).
func (m *Model) NewStepper(seqs [][]int) (*Stepper, error) {
	if m.closed {
		return nil, errors.New("model: stepper: the model is closed")
	}
	c := m.Config
	maxLen := 0
	for i, seq := range seqs {
		if len(seq) == 0 {
			return nil, quant.InputError(fmt.Errorf("model: calibration sequence %d is empty", i))
		}
		for t, id := range seq {
			if id < 0 || id >= c.Vocab {
				return nil, quant.InputError(fmt.Errorf("model: token %d of calibration sequence %d is %d, outside the vocabulary [0, %d)", t, i, id, c.Vocab))
			}
		}
		maxLen = max(maxLen, len(seq))
	}
	if maxLen == 0 {
		return nil, quant.InputError(errors.New("model: no calibration sequences"))
	}
	st := &Stepper{m: m, s: m.NewSession(1, maxLen), x: make([][]float32, len(seqs))}
	for i, seq := range seqs {
		x := make([]float32, len(seq)*c.Hidden)
		for t, id := range seq {
			if err := m.embed.row(m.be, x[t*c.Hidden:(t+1)*c.Hidden], id); err != nil {
				return nil, err
			}
		}
		st.x[i] = x
	}
	return st, nil
}

// Tokens is the total number of calibration tokens.
func (st *Stepper) Tokens() int {
	n := 0
	for _, x := range st.x {
		n += len(x) / st.m.Config.Hidden
	}
	return n
}

// Sequences is the number of calibration sequences.
func (st *Stepper) Sequences() int { return len(st.x) }

// Layer runs decoder layer li over every sequence's hidden state, calling
// obs as Forward does. When last is not empty, each sequence's run ends
// right after obs has seen that weight (its product is not computed) and
// the hidden states stay as they were; otherwise, with commit, the layer's
// outputs become the hidden states. done is called after each sequence.
// It stops with ctx.
func (st *Stepper) Layer(ctx context.Context, li int, last string, commit bool, obs Observer, done func()) error {
	s, c := st.s, st.m.Config
	if st.m.closed {
		return errors.New("model: stepper: the model is closed")
	}
	if li < 0 || li >= len(st.m.layers) {
		return fmt.Errorf("model: stepper: layer %d of %d", li, len(st.m.layers))
	}
	for _, x := range st.x {
		T := len(x) / c.Hidden
		run, cancel := context.WithCancelCause(ctx)
		o := obs
		if last != "" {
			o = func(w string, x []float32, tokens, in int) {
				if obs != nil {
					obs(w, x, tokens, in)
				}
				if w == last {
					cancel(errStageDone)
				}
			}
		}
		s.pos = 0
		s.grow(T)
		s.ropeTables(T)
		copy(s.s.x, x)
		s.done = run
		err := s.layer(li, T, o)
		s.done = nil
		stageDone := errors.Is(context.Cause(run), errStageDone)
		cancel(nil)
		if ctx.Err() != nil {
			return fmt.Errorf("model: stepper: %w", stop.Err(ctx))
		}
		if err != nil && !stageDone {
			return err
		}
		if commit && last == "" {
			copy(x, s.s.x[:len(x)])
		}
		if done != nil {
			done()
		}
	}
	return nil
}

// Head calls obs with the input of the output head, rmsnorm(x)·w, for
// every sequence.
func (st *Stepper) Head(ctx context.Context, obs Observer) error {
	m, c := st.m, st.m.Config
	for _, x := range st.x {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("model: stepper: %w", stop.Err(ctx))
		}
		T := len(x) / c.Hidden
		xn := make([]float32, len(x))
		rmsnorm(xn, x, m.norm, c.NormEps)
		obs(m.head.name, xn, T, c.Hidden)
	}
	return nil
}

// Stages lists the linears of decoder layer li in the groups a
// sequential calibration quantizes together, in Forward's order: each
// group's inputs depend only on the groups before it. Dense: q, k, v; o;
// gate, up; down. Mixtral: q, k, v; o; the router; every expert's w1 and
// w3; every expert's w2.
func (m *Model) Stages(li int) [][]string {
	ly := &m.layers[li]
	out := [][]string{{ly.q.name, ly.k.name, ly.v.name}, {ly.o.name}}
	if ly.router == nil {
		return append(out, []string{ly.gate.name, ly.up.name}, []string{ly.down.name})
	}
	var in, down []string
	for _, e := range ly.experts {
		in = append(in, e.w1.name, e.w3.name)
		down = append(down, e.w2.name)
	}
	return append(out, []string{ly.router.name}, in, down)
}

// Layers is the number of decoder layers.
func (m *Model) Layers() int { return len(m.layers) }

// HeadName is the output head's weight: lm_head.weight, or the embedding's
// name when the head is tied to it.
func (m *Model) HeadName() string { return m.head.name }

// EmbeddingName is the embedding's weight name.
func (m *Model) EmbeddingName() string { return m.embed.name }

// find returns the linear of that weight name.
func (m *Model) find(name string) *linear {
	if m.embed.name == name {
		return m.embed
	}
	if m.head.name == name {
		return m.head
	}
	for i := range m.layers {
		for _, l := range m.layers[i].linears() {
			if l.name == name {
				return l
			}
		}
	}
	return nil
}

// Weights returns the binary32 matrix of a linear held as floats (a view:
// do not modify it), with its shape; ok is false for an unknown name or a
// packed matrix.
func (m *Model) Weights(name string) (w []float32, rows, cols int, ok bool) {
	l := m.find(name)
	if l == nil || l.quantized() {
		return nil, 0, 0, false
	}
	return l.w, l.rows, l.cols, true
}

// SetQuantized replaces a linear's weights by packed codes and scales in
// layout lay (which must match its shape and the buffers); later products
// go through the backend's MatMul, and the binary32 copy is released. The
// model keeps the slices: the caller must not modify them.
func (m *Model) SetQuantized(name string, packed []byte, scales []uint16, lay quant.Layout) error {
	l := m.find(name)
	if l == nil {
		return fmt.Errorf("model: no linear %q", name)
	}
	if lay.Rows != l.rows || lay.Cols != l.cols {
		return fmt.Errorf("model: %s is %d×%d, layout %d×%d", name, l.rows, l.cols, lay.Rows, lay.Cols)
	}
	if err := lay.CheckBuffers(nil, packed, scales); err != nil {
		return fmt.Errorf("model: %s: %w", name, err)
	}
	l.w, l.packed, l.scales, l.layout = nil, packed, scales, lay
	return nil
}

// SwapWeights replaces the binary32 weights of a linear held as floats by
// w (same length; the model keeps the slice) and returns the previous
// slice, so that a caller can measure the model with one matrix changed
// and put the original back with a second call.
func (m *Model) SwapWeights(name string, w []float32) ([]float32, error) {
	l := m.find(name)
	if l == nil || l.quantized() {
		return nil, fmt.Errorf("model: no binary32 linear %q", name)
	}
	if len(w) != len(l.w) {
		return nil, fmt.Errorf("model: %s has %d weights, got %d", name, len(l.w), len(w))
	}
	old := l.w
	l.w = w
	return old, nil
}

// States returns a copy of every sequence's hidden state.
func (st *Stepper) States() [][]float32 {
	out := make([][]float32, len(st.x))
	for i, x := range st.x {
		out[i] = slices.Clone(x)
	}
	return out
}

// SetStates copies hidden states saved by States back in.
func (st *Stepper) SetStates(xs [][]float32) error {
	if len(xs) != len(st.x) {
		return fmt.Errorf("model: stepper: %d states for %d sequences", len(xs), len(st.x))
	}
	for i, x := range xs {
		if len(x) != len(st.x[i]) {
			return fmt.Errorf("model: stepper: state %d has %d values, want %d", i, len(x), len(st.x[i]))
		}
		copy(st.x[i], x)
	}
	return nil
}

// Logits computes head(rmsnorm(x)) from every sequence's hidden state, as
// Forward does after the last layer, and calls fn with each sequence's
// logits ([T][Vocab]; the slice is reused between calls).
func (st *Stepper) Logits(ctx context.Context, fn func(seq int, logits []float32) error) error {
	m, c := st.m, st.m.Config
	if m.closed {
		return errors.New("model: stepper: the model is closed")
	}
	var xn, y []float32
	for i, x := range st.x {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("model: stepper: %w", stop.Err(ctx))
		}
		T := len(x) / c.Hidden
		xn = slices.Grow(xn[:0], len(x))[:len(x)]
		rmsnorm(xn, x, m.norm, c.NormEps)
		y = slices.Grow(y[:0], T*c.Vocab)[:T*c.Vocab]
		if err := m.head.forward(m.be, y, xn, T); err != nil {
			return err
		}
		if err := fn(i, y); err != nil {
			return err
		}
	}
	return nil
}
