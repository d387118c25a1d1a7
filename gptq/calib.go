package gptq

import (
	"context"
	"fmt"
	"runtime/debug"
	"unsafe"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// Rounded is one quantized matrix: its layout, F16 scales and packed codes,
// exactly as the output stores them, and how its rows were rounded.
type Rounded struct {
	Layout quant.Layout
	Scales []uint16
	Packed []byte
	Method [3]int // rows per Method
	// Loss and LossRTN are the proxy losses of the result and of absmax
	// rounding with the second moment it was quantized with.
	Loss, LossRTN float64
	Tokens        int64
}

// CalibOptions configures Sequential.
type CalibOptions struct {
	Options
	// Target gives the layout of each linear to quantize; ok false leaves
	// the linear as it is.
	Target func(name string) (l quant.Layout, ok bool)
	// Notice receives one-line notices (degenerate statistics).
	Notice func(string)
	// Progress is called after each unit of work with the units done so
	// far and the total (one unit per sequence and layer run).
	Progress func(done, total int)
}

// Sequential quantizes the targeted linears of m with GPTQ, layer by layer
// and stage by stage (see the package documentation), on the calibration
// sequences seqs, and returns the result of every targeted linear by
// name. m's binary32 weights of each quantized linear are replaced by the
// quantized ones as it goes (m is consumed: use it only for this).
//
// The embedding, when targeted, is rounded first with SearchScale without
// weights (its rows are looked up, not multiplied), so that layer 0 sees
// the quantized embedding; a head tied to it is not quantized again. A
// non-finite activation is an input error naming the linear whose input
// it is. It stops with ctx.
func Sequential(ctx context.Context, m *model.Model, seqs [][]int, opt CalibOptions) (map[string]*Rounded, error) {
	out := map[string]*Rounded{}
	notice := func(s string) {
		if opt.Notice != nil {
			opt.Notice(s)
		}
	}
	emb := m.EmbeddingName()
	if l, ok := opt.Target(emb); ok {
		r, err := searchOnly(m, emb, l)
		if err != nil {
			return nil, err
		}
		out[emb] = r
	}
	st, err := m.NewStepper(seqs)
	if err != nil {
		return nil, err
	}
	// Layers after the last one with a target (when the head is not one
	// either) need not run at all.
	head := m.HeadName()
	_, headDone := out[head]
	_, headTarget := opt.Target(head)
	layers := m.Layers()
	if headDone || !headTarget {
		layers = 0
		for li := range m.Layers() {
			for _, stage := range m.Stages(li) {
				for _, name := range stage {
					if _, ok := opt.Target(name); ok {
						layers = li + 1
					}
				}
			}
		}
	}
	total, done := 0, 0
	for li := range layers {
		total += (len(m.Stages(li)) + 1) * st.Sequences()
	}
	if !headDone && headTarget {
		total += st.Sequences()
	}
	tick := func() {
		done++
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	for li := range layers {
		for _, stage := range m.Stages(li) {
			c := newCollector(ctx, stage, opt.Workers)
			if err := st.Layer(ctx, li, stage[len(stage)-1], false, c.observe, func() { c.next(); tick() }); err != nil {
				return nil, err
			}
			if c.err != nil {
				return nil, c.err
			}
			if err := quantizeStage(ctx, m, stage, c, opt, out, notice); err != nil {
				return nil, err
			}
		}
		if err := st.Layer(ctx, li, "", true, nil, tick); err != nil {
			return nil, err
		}
	}
	if !headDone {
		if headTarget {
			c := newCollector(ctx, []string{head}, opt.Workers)
			if err := st.Head(ctx, func(w string, x []float32, tokens, in int) { c.observe(w, x, tokens, in); c.next(); tick() }); err != nil {
				return nil, err
			}
			if c.err != nil {
				return nil, c.err
			}
			if err := quantizeStage(ctx, m, []string{head}, c, opt, out, notice); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// quantizeStage runs GPTQ on the targeted linears of one stage with the
// statistics c gathered for them: the linears that share an input (and so
// a Moment) are quantized one after the other against one Factor, which is
// then dropped; each result is packed with the CPU backend and handed to
// the model.
func quantizeStage(ctx context.Context, m *model.Model, stage []string, c *collector, opt CalibOptions, out map[string]*Rounded, notice func(string)) error {
	done := map[string]bool{}
	for i, first := range stage {
		if done[first] {
			continue
		}
		// The linears of the stage that share first's input, in order.
		leader := c.leader[first]
		group := []string{first}
		for _, name := range stage[i+1:] {
			if leader != "" && c.leader[name] == leader {
				group = append(group, name)
			}
		}
		var ls []Linear
		for _, name := range group {
			done[name] = true
			l, ok := opt.Target(name)
			if !ok {
				continue
			}
			w, rows, cols, ok := m.Weights(name)
			if !ok {
				return fmt.Errorf("gptq: %s is not held as binary32", name)
			}
			if l.Rows != rows || l.Cols != cols {
				return fmt.Errorf("gptq: %s is %d×%d, its layout %d×%d", name, rows, cols, l.Rows, l.Cols)
			}
			ls = append(ls, Linear{Name: name, W: w, Layout: l})
		}
		mo := c.moment(first)
		if leader != "" {
			delete(c.moments, leader) // taken here: its storage becomes H
		}
		if len(ls) > 0 {
			if mo == nil {
				mo = NewMoment(ls[0].Layout.Cols) // never observed (an expert no token chose)
			}
			err := QuantizeShared(ctx, mo, ls, opt.Options, notice, func(r *Rounded, ln Linear) error {
				out[ln.Name] = r
				return m.SetQuantized(ln.Name, r.Packed, r.Scales, r.Layout)
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Linear is one matrix for QuantizeShared.
type Linear struct {
	Name   string
	W      []float32 // row-major Layout.Rows × Layout.Cols
	Layout quant.Layout
}

// QuantizeShared quantizes linears that share one input, and so one
// second moment mo, which it takes (Moment.TakeMean): H is converted in
// place, damped and factored once (NewFactor), then each linear is
// quantized (Factor.Quantize), packed with the CPU backend and handed to
// done, in order, before the next is started; notice receives each
// linear's notices, prefixed with its name. This is the whole of GPTQ as
// Sequential runs it after the statistics of a stage are gathered. A
// non-finite weight or an overflowing scale is an input error naming the
// linear; a stopped ctx an error wrapping its cause.
func QuantizeShared(ctx context.Context, mo *Moment, ls []Linear, opt Options, notice func(string), done func(*Rounded, Linear) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gptq: %w", stop.Err(ctx))
	}
	if len(ls) == 0 {
		return nil
	}
	k := mo.Channels()
	for _, ln := range ls {
		if ln.Layout.Cols != k {
			return fmt.Errorf("gptq: %s has %d input channels, its moment %d", ln.Name, ln.Layout.Cols, k)
		}
		if err := ln.Layout.CheckBuffers(ln.W, nil, nil); err != nil {
			return &quant.TensorError{Tensor: ln.Name, Err: err}
		}
		// Before the factorisation, which takes long at large K.
		if err := checkWeights(ln.W); err != nil {
			return quant.InputError(&quant.TensorError{Tensor: ln.Name, Err: err})
		}
	}
	tokens := mo.Tokens()
	h := mo.TakeMean()
	if k >= bigK {
		// The garbage of the forward pass that produced the statistics
		// goes back before the long part, and before the results are
		// allocated on top of it.
		debug.FreeOSMemory()
	}
	f, err := NewFactor(ctx, h, tokens, opt)
	if ctx.Err() != nil {
		return fmt.Errorf("gptq: %w", stop.Err(ctx))
	}
	if err != nil {
		return quant.InputError(&quant.TensorError{Tensor: ls[0].Name, Err: err})
	}
	for _, ln := range ls {
		res, err := f.Quantize(ctx, ln.W, ln.Layout, opt)
		if ctx.Err() != nil {
			return fmt.Errorf("gptq: %w", stop.Err(ctx))
		}
		if err != nil {
			return quant.InputError(&quant.TensorError{Tensor: ln.Name, Err: err})
		}
		if notice != nil {
			for _, n := range res.Notices {
				notice(fmt.Sprintf("%s: %s", ln.Name, n))
			}
		}
		r, err := pack(res.W, res.Scales, ln.Layout)
		if err != nil {
			return &quant.TensorError{Tensor: ln.Name, Err: err}
		}
		r.Method, r.Loss, r.LossRTN, r.Tokens = res.Rows, res.Loss, res.LossRTN, tokens
		res = nil
		if err := done(r, ln); err != nil {
			return err
		}
	}
	if k >= bigK {
		// H and U (16·K(K+1)/2 bytes) and the dequantized results are
		// garbage now: hand them back before the next stage allocates its
		// moments, which would otherwise come on top of them.
		debug.FreeOSMemory()
	}
	return nil
}

// bigK is the number of channels from which QuantizeShared returns its
// memory to the system when done (a moment of 2048 channels is 33 MB).
const bigK = 2048

// searchOnly rounds a linear with unweighted scale search.
func searchOnly(m *model.Model, name string, l quant.Layout) (*Rounded, error) {
	w, _, _, ok := m.Weights(name)
	if !ok {
		return nil, fmt.Errorf("gptq: %s is not held as binary32", name)
	}
	scales := make([]uint16, l.NumScales())
	if err := SearchScales(scales, w, nil, l); err != nil {
		return nil, quant.InputError(&quant.TensorError{Tensor: name, Err: err})
	}
	r, err := pack(w, scales, l)
	if err != nil {
		return nil, &quant.TensorError{Tensor: name, Err: err}
	}
	r.Method[Search] = l.Rows
	return r, m.SetQuantized(name, r.Packed, r.Scales, l)
}

// pack encodes w with scales through the CPU backend (its Quantize is the
// reference every backend matches).
func pack(w []float32, scales []uint16, l quant.Layout) (*Rounded, error) {
	packed := make([]byte, l.PackedBytes())
	if err := cpu.New(0).Quantize(packed, w, scales, l); err != nil {
		return nil, err
	}
	return &Rounded{Layout: l, Scales: scales, Packed: packed}, nil
}

// collector accumulates the second moments of one stage's linears,
// once per distinct input: consecutive calls with the same slice (q, k
// and v; gate and up; an expert's w1 and w3) share one Moment.
type collector struct {
	ctx     context.Context
	want    map[string]bool
	leader  map[string]string
	moments map[string]*Moment
	prevW   string
	prevX   unsafe.Pointer
	prevN   int
	workers int
	err     error
}

func newCollector(ctx context.Context, names []string, workers int) *collector {
	c := &collector{ctx: ctx, want: map[string]bool{}, leader: map[string]string{}, moments: map[string]*Moment{}, workers: workers}
	for _, n := range names {
		c.want[n] = true
	}
	if c.workers <= 0 {
		c.workers = Options{}.workers()
	}
	return c
}

func (c *collector) observe(w string, x []float32, tokens, in int) {
	p := unsafe.Pointer(unsafe.SliceData(x))
	shared := c.prevW != "" && p == c.prevX && tokens == c.prevN
	leader := w
	if shared {
		leader = c.leader[c.prevW]
	}
	c.prevW, c.prevX, c.prevN = w, p, tokens
	c.leader[w] = leader
	if !c.want[w] || c.err != nil || (shared && c.want[leader]) {
		return // not this stage's, or already accumulated under its leader
	}
	mo := c.moments[leader]
	if mo == nil {
		mo = NewMoment(in)
		c.moments[leader] = mo
	}
	if err := mo.AddContext(c.ctx, x[:tokens*in], tokens, c.workers); err != nil {
		if c.ctx.Err() != nil {
			c.err = fmt.Errorf("gptq: %w", stop.Err(c.ctx))
			return
		}
		c.err = quant.InputError(fmt.Errorf("calibration input of %s: %w", w, err))
	}
}

// next forgets the previous call: the next sequence's first input may
// reuse the buffer of this one's last without being the same input.
func (c *collector) next() { c.prevW, c.prevX, c.prevN = "", nil, 0 }

func (c *collector) moment(name string) *Moment {
	if l, ok := c.leader[name]; ok {
		return c.moments[l]
	}
	return nil
}
