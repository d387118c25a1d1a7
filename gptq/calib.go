package gptq

import (
	"context"
	"fmt"
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
			c := newCollector(stage, opt.Workers)
			if err := st.Layer(ctx, li, stage[len(stage)-1], false, c.observe, func() { c.next(); tick() }); err != nil {
				return nil, err
			}
			if c.err != nil {
				return nil, c.err
			}
			for _, name := range stage {
				if err := quantizeOne(ctx, m, name, c, opt, out, notice); err != nil {
					return nil, err
				}
			}
		}
		if err := st.Layer(ctx, li, "", true, nil, tick); err != nil {
			return nil, err
		}
	}
	if !headDone {
		if headTarget {
			c := newCollector([]string{head}, opt.Workers)
			if err := st.Head(ctx, func(w string, x []float32, tokens, in int) { c.observe(w, x, tokens, in); c.next(); tick() }); err != nil {
				return nil, err
			}
			if c.err != nil {
				return nil, c.err
			}
			if err := quantizeOne(ctx, m, head, c, opt, out, notice); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// quantizeOne runs GPTQ on one linear with the statistics c gathered for
// it, packs the result with the CPU backend and hands it to the model.
func quantizeOne(ctx context.Context, m *model.Model, name string, c *collector, opt CalibOptions, out map[string]*Rounded, notice func(string)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gptq: %w", stop.Err(ctx))
	}
	l, ok := opt.Target(name)
	if !ok {
		return nil
	}
	w, rows, cols, ok := m.Weights(name)
	if !ok {
		return fmt.Errorf("gptq: %s is not held as binary32", name)
	}
	if l.Rows != rows || l.Cols != cols {
		return fmt.Errorf("gptq: %s is %d×%d, its layout %d×%d", name, rows, cols, l.Rows, l.Cols)
	}
	mo := c.moment(name)
	var h []float64
	var tokens int64
	if mo != nil {
		h, tokens = mo.Mean(), mo.Tokens()
	} else {
		h = make([]float64, cols*cols) // never observed (an expert no token chose)
	}
	res, err := QuantizeContext(ctx, w, l, h, tokens, opt.Options)
	if ctx.Err() != nil {
		return fmt.Errorf("gptq: %w", stop.Err(ctx))
	}
	if err != nil {
		return quant.InputError(&quant.TensorError{Tensor: name, Err: err})
	}
	for _, n := range res.Notices {
		notice(fmt.Sprintf("%s: %s", name, n))
	}
	r, err := pack(res.W, res.Scales, l)
	if err != nil {
		return &quant.TensorError{Tensor: name, Err: err}
	}
	r.Method, r.Loss, r.LossRTN, r.Tokens = res.Rows, res.Loss, res.LossRTN, tokens
	out[name] = r
	return m.SetQuantized(name, r.Packed, r.Scales, l)
}

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
	want    map[string]bool
	leader  map[string]string
	moments map[string]*Moment
	prevW   string
	prevX   unsafe.Pointer
	prevN   int
	workers int
	err     error
}

func newCollector(names []string, workers int) *collector {
	c := &collector{want: map[string]bool{}, leader: map[string]string{}, moments: map[string]*Moment{}, workers: workers}
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
	if err := mo.Add(x[:tokens*in], tokens, c.workers); err != nil {
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
