package importance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
)

// DefaultMaxShardSize is the shard size the budget plans with when none is
// given; it equals mixq.DefaultMaxShardSize, which PlanQuantization uses.
const DefaultMaxShardSize = 5_000_000_000

// Window is how far below the target the budget policy tries to land: the
// planned size is in [ceil((1 − Window)·target), target] whenever some
// combination of single and paired precision changes reaches it.
const Window = 0.005

// maxPairOptions bounds the precision changes combined in pairs by the
// local search (pairs are quadratic in their number); above it the search
// uses single changes only.
const maxPairOptions = 600

// maxTripleOptions bounds the single changes combined in triples, which
// only the search for the size window uses.
const maxTripleOptions = 120

// sizeSlop is how far the modelled size of a change may be off the exact
// one (alignment padding, widths of header numbers): changes that miss a
// size limit by no more than this are still tried with the exact planner.
const sizeSlop = 32

// maxTries bounds the exact plans built to verify the candidates of one
// local-search step.
const maxTries = 64

// RatioTarget is the byte budget for compression ratio r against FP32:
// floor(4·P / r), P the number of parameters of the checkpoint.
func RatioTarget(ck *checkpoint.Checkpoint, r float64) (int64, error) {
	if !(r > 0) || math.IsInf(r, 0) {
		return 0, quant.InputError(fmt.Errorf("target ratio %v: want a positive number", r))
	}
	return int64(math.Floor(float64(4*parameters(ck)) / r)), nil
}

// BPWTarget is the byte budget for b bits per weight: floor(b·P / 8).
func BPWTarget(ck *checkpoint.Checkpoint, b float64) (int64, error) {
	if !(b > 0) || math.IsInf(b, 0) {
		return 0, quant.InputError(fmt.Errorf("target bits per weight %v: want a positive number", b))
	}
	return int64(math.Floor(b * float64(parameters(ck)) / 8)), nil
}

func parameters(ck *checkpoint.Checkpoint) int64 {
	var n int64
	for _, t := range ck.Tensors {
		n += t.NumElements()
	}
	return n
}

// Budget chooses the precision of every unpinned matrix to minimize the
// total loss (Σ Score·elements·RelError) with the exact output size at most
// TargetBytes. See the package documentation for the solver and its bound.
type Budget struct {
	TargetBytes  int64
	GroupSize    int
	MaxShardSize int64
	// PlannedBytes is the exact size qformat.Build gives for the choice
	// (Layout.TotalBytes), with this group size and shard size.
	PlannedBytes int64
	// Loss is the total loss of the choice; LowerBound is the loss of the
	// LP relaxation (no choice of the same data budget does better), and
	// GreedyBound the loss reduction of the greedy's break step, which
	// bounds how far the greedy solution is from LowerBound.
	Loss, LowerBound, GreedyBound float64

	pins   pins
	a      *Analysis
	assign map[string]choice
	inputs []qformat.Input
	config []byte
}

// BudgetSummary is the budget part of a Report.
type BudgetSummary struct {
	TargetBytes  int64   `json:"target_bytes"`
	WindowLow    int64   `json:"window_low_bytes"`
	PlannedBytes int64   `json:"planned_bytes"`
	MaxShardSize int64   `json:"max_shard_size"`
	Loss         float64 `json:"loss"`
	LowerBound   float64 `json:"lower_bound"`
	GreedyBound  float64 `json:"greedy_gap_bound"`
}

// Summary reports the budget's result.
func (b *Budget) Summary() *BudgetSummary {
	return &BudgetSummary{
		TargetBytes: b.TargetBytes, WindowLow: windowLow(b.TargetBytes), PlannedBytes: b.PlannedBytes,
		MaxShardSize: b.MaxShardSize, Loss: b.Loss, LowerBound: b.LowerBound, GreedyBound: b.GreedyBound,
	}
}

func windowLow(target int64) int64 { return int64(math.Ceil(float64(target) * (1 - Window))) }

// Name is "budget".
func (b *Budget) Name() string { return "budget" }

// Decide keeps vectors, applies pins, and gives every other matrix the
// precision the solver chose.
func (b *Budget) Decide(t policy.Tensor) policy.Decision {
	dec, done := b.pins.decide(t)
	if done {
		return dec
	}
	ch, ok := b.assign[t.Name]
	if !ok {
		dec.Keep = true
		dec.Reason = "not analysed (empty or not in the checkpoint analysed)"
		return dec
	}
	p := ch.p
	dec.Precision, dec.Source = p, "budget"
	if p.Quantized() {
		dec.GroupSize = ch.g
	}
	if ts, ok := b.a.Lookup(t.Name); ok {
		if c, ok := ts.CandidateAt(p, ch.g); ok && p != quant.F32 {
			dec.Reason = fmt.Sprintf("importance %.4f, rank %d: loss %.4g at %s", ts.Score, ts.Rank, c.Loss, ch)
		} else {
			dec.Reason = fmt.Sprintf("importance %.4f, rank %d: no candidate fits, kept at %s", ts.Score, ts.Rank, p)
		}
	}
	return dec
}

// choice is a precision and, for INT8/INT4, its group size.
type choice struct {
	p quant.Precision
	g int
}

func (c choice) String() string {
	if c.p.Quantized() {
		return fmt.Sprintf("%s g%d", c.p, c.g)
	}
	return c.p.String()
}

// option is one feasible precision of an item. cost is the size of a
// plan holding the tensor alone at that precision: its data, its header
// entries and its metadata record, plus constants that cancel between the
// options of one tensor.
type option struct {
	c    choice
	cost int64
	loss float64
}

// alone is the exact size of a one-tensor output holding t at c.
func (b *Budget) alone(t *TensorScore, c choice) (int64, error) {
	in := []qformat.Input{{Name: t.Name, DType: t.DType, Shape: t.Shape}}
	plan, err := qformat.Build(in, func(x policy.Tensor) policy.Decision {
		return policy.Decision{Name: x.Name, Precision: c.p, GroupSize: c.g}
	}, qformat.Options{GroupSize: b.GroupSize, PolicyName: b.Name()})
	if err != nil {
		return 0, err
	}
	return plan.Layout.TotalBytes(), nil
}

// item is an unpinned matrix the solver chooses for.
type item struct {
	t    *TensorScore
	opts []option // by cost, then loss
	cur  int
}

// NewBudget solves for the precisions. ck must be the checkpoint a was
// computed from; targetBytes is the size of every file written (see
// RatioTarget, BPWTarget); maxShard is the --max-shard-size the output will
// be planned with (0: DefaultMaxShardSize), since shard headers count. The
// group size is a.GroupSize. A target below the smallest possible output
// (every unpinned matrix at its cheapest precision, pins honoured) is an
// error marked quant.ErrInput.
func NewBudget(a *Analysis, rules []policy.Rule, ck *checkpoint.Checkpoint, targetBytes, maxShard int64) (*Budget, error) {
	return NewBudgetContext(context.Background(), a, rules, ck, targetBytes, maxShard)
}

// NewBudgetContext is NewBudget that stops when ctx is done, checking
// before every exact plan it builds, with an error wrapping the context's
// (errors.Is(err, context.Canceled)).
func NewBudgetContext(ctx context.Context, a *Analysis, rules []policy.Rule, ck *checkpoint.Checkpoint, targetBytes, maxShard int64) (*Budget, error) {
	if targetBytes <= 0 {
		return nil, quant.InputError(fmt.Errorf("budget: target %d bytes must be positive", targetBytes))
	}
	if maxShard == 0 {
		maxShard = DefaultMaxShardSize
	}
	b := &Budget{
		TargetBytes: targetBytes, GroupSize: a.GroupSize, MaxShardSize: maxShard,
		pins: newPins(rules, a.TiedHead), a: a, assign: map[string]choice{}, config: ck.Config,
	}
	for _, t := range ck.Tensors {
		ts, ok := a.Lookup(t.Name)
		if !ok || !slices.Equal(ts.Shape, t.Shape) {
			return nil, errors.New("budget: the analysis is not of this checkpoint (tensor " + t.Name + ")")
		}
		b.inputs = append(b.inputs, qformat.Input{Name: t.Name, DType: t.DType, Shape: t.Shape})
	}
	var items []*item
	for _, t := range a.Matrices() {
		if err := stop.Err(ctx); err != nil {
			return nil, err
		}
		if _, ok := b.pins.match(t.Name); ok {
			continue
		}
		it := &item{t: t}
		for _, c := range t.Candidates {
			if !c.Feasible || (c.Precision.Quantized() && a.choices != nil && !slices.Contains(a.choices, c.GroupSize)) {
				continue
			}
			ch := choice{c.Precision, c.GroupSize}
			cost, err := b.alone(t, ch)
			if err != nil {
				return nil, err
			}
			it.opts = append(it.opts, option{ch, cost, c.Loss})
		}
		if len(it.opts) == 0 {
			b.assign[t.Name] = choice{p: quant.F32} // no quantized or F16 form holds it
			continue
		}
		sort.SliceStable(it.opts, func(i, j int) bool {
			if it.opts[i].cost != it.opts[j].cost {
				return it.opts[i].cost < it.opts[j].cost
			}
			return it.opts[i].loss < it.opts[j].loss
		})
		items = append(items, it)
	}
	s := &solver{ctx: ctx, b: b, items: items}
	for _, it := range items {
		s.set(it, 0)
	}
	total, err := s.build()
	if err != nil {
		return nil, err
	}
	if total > targetBytes {
		return nil, quant.InputError(fmt.Errorf("budget: target %d bytes is below the smallest possible output, %d bytes (every unpinned matrix at its cheapest precision, pins honoured)", targetBytes, total))
	}
	// The size model: total ≈ base + Σ cost of the items' options.
	var minCost int64
	for _, it := range items {
		minCost += it.opts[0].cost
	}
	s.greedy(targetBytes - (total - minCost))
	if _, err := s.build(); err != nil {
		return nil, err
	}
	if err := s.refine(); err != nil {
		return nil, err
	}
	b.Loss = s.loss()
	return b, nil
}

// solver holds the state of one NewBudget.
type solver struct {
	ctx   context.Context
	b     *Budget
	items []*item
	total int64 // exact planned size of the current choice
}

func (s *solver) set(it *item, k int) {
	it.cur = k
	s.b.assign[it.t.Name] = it.opts[k].c
}

func (s *solver) loss() float64 {
	var l float64
	for _, it := range s.items {
		l += it.opts[it.cur].loss
	}
	return l
}

// build plans the current choice exactly; it is the unit of the solver's
// work, so it is where the context is checked.
func (s *solver) build() (int64, error) {
	if err := stop.Err(s.ctx); err != nil {
		return 0, err
	}
	b := s.b
	plan, err := qformat.Build(b.inputs, b.Decide, qformat.Options{
		GroupSize: b.GroupSize, MaxShardSize: b.MaxShardSize, Config: b.config, PolicyName: b.Name(),
	})
	if err != nil {
		return 0, err
	}
	s.total = plan.Layout.TotalBytes()
	b.PlannedBytes = s.total
	return s.total, nil
}

// hull returns the indices of the lower convex hull of an item's (cost,
// loss) points, from its cheapest option: each step to the next point
// lowers the loss, at a rate per byte that strictly decreases along the hull.
func hull(opts []option) []int {
	var h []int
	for i, o := range opts {
		if len(h) > 0 && o.loss >= opts[h[len(h)-1]].loss {
			continue // costs more and saves nothing
		}
		for len(h) >= 2 {
			p, q := opts[h[len(h)-2]], opts[h[len(h)-1]]
			if (p.loss-q.loss)/float64(q.cost-p.cost) <= (q.loss-o.loss)/float64(o.cost-q.cost) {
				h = h[:len(h)-1]
				continue
			}
			break
		}
		h = append(h, i)
	}
	return h
}

type step struct {
	item     int
	from, to int
	dc       int64
	dl       float64 // < 0
}

// greedy runs the convex-hull greedy for the items' data budget: every item
// starts at its cheapest option, and the hull steps of all items are taken
// in order of decreasing loss saved per byte while they fit; after the
// first step that does not fit (the break step) the remaining steps are
// still taken when they fit (fill). It records the LP bound.
func (s *solver) greedy(budget int64) {
	var steps []step
	lb := 0.0
	remaining := budget
	for i, it := range s.items {
		lb += it.opts[0].loss
		remaining -= it.opts[0].cost
		h := hull(it.opts)
		for k := 1; k < len(h); k++ {
			p, q := it.opts[h[k-1]], it.opts[h[k]]
			steps = append(steps, step{item: i, from: h[k-1], to: h[k], dc: q.cost - p.cost, dl: q.loss - p.loss})
		}
	}
	sort.SliceStable(steps, func(i, j int) bool {
		ei, ej := -steps[i].dl/float64(steps[i].dc), -steps[j].dl/float64(steps[j].dc)
		if ei != ej {
			return ei > ej
		}
		ni, nj := s.items[steps[i].item].t.Name, s.items[steps[j].item].t.Name
		if ni != nj {
			return ni < nj
		}
		return steps[i].from < steps[j].from
	})
	broken := false
	for _, st := range steps {
		it := s.items[st.item]
		if it.cur != st.from {
			continue
		}
		if st.dc <= remaining {
			s.set(it, st.to)
			remaining -= st.dc
			if !broken {
				lb += st.dl
			}
			continue
		}
		if !broken {
			broken = true
			if remaining > 0 {
				lb += st.dl * float64(remaining) / float64(st.dc)
			}
			s.b.GreedyBound = -st.dl
		}
	}
	s.b.LowerBound = lb
}

type change struct{ item, to int }

// move changes the options of up to three different items; dc and dl are
// its effect on the modelled size and on the loss.
type move struct {
	ch [3]change
	n  int
	dc int64
	dl float64
}

func (m move) with(o move) move {
	for i := range o.n {
		m.ch[m.n] = o.ch[i]
		m.n++
	}
	m.dc += o.dc
	m.dl += o.dl
	return m
}

func (m move) touches(item int) bool {
	for i := range m.n {
		if m.ch[i].item == item {
			return true
		}
	}
	return false
}

// moves lists every single change of one item's option; every pair of
// changes of two items when there are at most maxPairOptions single
// changes; and, up to order 3, every triple when there are at most
// maxTripleOptions.
func (s *solver) moves(order int) []move {
	var singles []move
	for i, it := range s.items {
		c := it.opts[it.cur]
		for k, o := range it.opts {
			if k != it.cur {
				singles = append(singles, move{ch: [3]change{{i, k}}, n: 1, dc: o.cost - c.cost, dl: o.loss - c.loss})
			}
		}
	}
	out := slices.Clone(singles)
	if order < 2 || len(singles) > maxPairOptions {
		return out
	}
	for x := range singles {
		for y := x + 1; y < len(singles); y++ {
			if singles[x].ch[0].item == singles[y].ch[0].item {
				continue
			}
			p := singles[x].with(singles[y])
			out = append(out, p)
			if order < 3 || len(singles) > maxTripleOptions {
				continue
			}
			for z := y + 1; z < len(singles); z++ {
				if !p.touches(singles[z].ch[0].item) {
					out = append(out, p.with(singles[z]))
				}
			}
		}
	}
	return out
}

// try applies m and keeps it when the exact planned size lands in [lo, hi].
func (s *solver) try(m move, lo, hi int64) (bool, error) {
	before := s.total
	var old [3]int
	for i := range m.n {
		c := m.ch[i]
		old[i] = s.items[c.item].cur
		s.set(s.items[c.item], c.to)
	}
	total, err := s.build()
	if err != nil {
		return false, err
	}
	if total >= lo && total <= hi {
		return true, nil
	}
	for i := range m.n {
		s.set(s.items[m.ch[i].item], old[i])
	}
	s.total, s.b.PlannedBytes = before, before
	return false, nil
}

// firstFit tries the moves in order and keeps the first that lands in [lo, hi].
func (s *solver) firstFit(ms []move, lo, hi int64) (bool, error) {
	for i, m := range ms {
		if i == maxTries {
			break
		}
		ok, err := s.try(m, lo, hi)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// refine makes the greedy's choice fit the exact size and then improves
// it by local search, each step verified with the exact planner:
//
//  1. repair: while the plan exceeds the target, downgrade the item whose
//     downgrade covers the excess with the least loss added (or, if none
//     covers it, adds the least loss per byte saved);
//  2. improve: apply the single or paired change that lowers the loss most
//     and still fits, until none does;
//  3. fill: while the plan is below the window, apply the change that lands
//     in the window with the least loss added, or else the one that grows
//     the plan most;
//  4. improve again, without leaving the window.
func (s *solver) refine() error {
	target := s.b.TargetBytes
	limit := 10*len(s.items) + 100
	for n := 0; s.total > target; n++ {
		if n > limit {
			return errors.New("budget: repair did not converge")
		}
		over := s.total - target
		var best *move
		covers := false
		for _, m := range s.moves(1) {
			if m.dc >= 0 {
				continue
			}
			c := -m.dc >= over
			switch {
			case best == nil, c && !covers:
			case c && m.dl < best.dl:
			case !c && !covers && m.dl/float64(-m.dc) < best.dl/float64(-best.dc):
			default:
				continue
			}
			mm := m
			best, covers = &mm, c
		}
		if best == nil {
			return fmt.Errorf("budget: %d bytes over the target with nothing left to downgrade", over)
		}
		s.set(s.items[best.ch[0].item], best.ch[0].to)
		if _, err := s.build(); err != nil {
			return err
		}
	}
	lo := windowLow(target)
	if err := s.improve(0, limit); err != nil {
		return err
	}
	for n := 0; s.total < lo && n < limit; n++ {
		need, slack := lo-s.total, target-s.total
		var ms []move
		for _, m := range s.moves(3) {
			if m.dc > 0 && m.dc <= slack+sizeSlop {
				ms = append(ms, m)
			}
		}
		sort.SliceStable(ms, func(i, j int) bool {
			li, lj := ms[i].dc >= need, ms[j].dc >= need
			switch {
			case li != lj:
				return li
			case li:
				return ms[i].dl < ms[j].dl
			case ms[i].dc != ms[j].dc:
				return ms[i].dc > ms[j].dc
			}
			return ms[i].dl < ms[j].dl
		})
		ok, err := s.firstFit(ms, s.total+1, target)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
	}
	return s.improve(min(lo, s.total), limit)
}

// improve applies loss-lowering changes that keep the plan in [lo, target].
func (s *solver) improve(lo int64, limit int) error {
	target := s.b.TargetBytes
	for n := 0; n < limit; n++ {
		tol := 1e-12 * (math.Abs(s.loss()) + 1e-300)
		slack := target - s.total
		var ms []move
		for _, m := range s.moves(2) {
			if m.dl < -tol && m.dc <= slack+sizeSlop {
				ms = append(ms, m)
			}
		}
		sort.SliceStable(ms, func(i, j int) bool { return ms[i].dl < ms[j].dl })
		ok, err := s.firstFit(ms, min(lo, s.total), target)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
	}
	return nil
}
