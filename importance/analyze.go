package importance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/gptq"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Signal names one source of importance.
type Signal string

// The three signals.
const (
	// WeightSignal is the RMS of the weights, sqrt(mean(w²)).
	WeightSignal Signal = "weight"
	// ActivationSignal is the mean per-channel variance of the layer's input.
	ActivationSignal Signal = "activation"
	// GradientSignal is the mean of the accumulated |grad| or grad².
	GradientSignal Signal = "gradient"
)

// Signals lists the signals in report order.
var Signals = []Signal{WeightSignal, ActivationSignal, GradientSignal}

// DefaultWeights weighs the three signals equally.
func DefaultWeights() map[Signal]float64 {
	return map[Signal]float64{WeightSignal: 1, ActivationSignal: 1, GradientSignal: 1}
}

// Candidates are the precisions measured for every matrix, narrowest first.
var Candidates = []quant.Precision{quant.INT4, quant.INT8, quant.F16}

// blockElems bounds the elements of a weight matrix converted at a time.
const blockElems = 1 << 20

// Options configures Analyze.
type Options struct {
	// Weights of the signals in the combined score; nil means
	// DefaultWeights. A signal with weight 0 is not used.
	Weights map[Signal]float64
	// Grads is the path of a gradients safetensors file ("" for none).
	Grads string
	// Calib holds activation statistics (nil for none). They give the
	// activation signal and weight the measured errors.
	Calib *CalibStats
	// Backend runs the reductions and the quantization (cpu.New(0) when nil).
	Backend quant.Backend
	// GroupSize of the quantized candidates (quant.DefaultGroupSize when
	// 0): the plan's group size, which the dynamic policy uses.
	GroupSize int
	// GroupSizes, when set, are the group sizes at which the INT8 and INT4
	// candidates are measured, for the budget policy to choose among per
	// tensor. GroupSize is measured too when missing (the dynamic policy
	// and the reports use it), but the budget chooses among GroupSizes
	// only. Nil: GroupSize alone.
	GroupSizes []int
	// Search measures the INT8/INT4 candidates with the scale search
	// (gptq.SearchScales, weighted by the damped E[x²] of the layer's input
	// when calibration has it) instead of absmax round to nearest: the
	// rounding the quantizer will apply (search, or gptq, whose codes start
	// from searched scales and never do worse on its proxy loss).
	Search bool
	// Sensitivity, when set, is the measured KL of each matrix at a
	// reference candidate (MeasureSensitivity, with the same rounding as
	// Search): the losses become predicted KL divergences (see the package
	// documentation). It must cover every matrix, else it is not used and
	// a notice says why.
	Sensitivity *Sensitivity
	// Notice receives every notice as it is issued (they are also kept in
	// Analysis.Notices).
	Notice func(string)
	// Progress, when set, is called after each block of a matrix with its
	// name and the bytes of tensor data the block held; the calls add up
	// to the data of every matrix (AnalyzedBytes).
	Progress func(tensor string, deltaBytes int64)
}

// AnalyzedBytes is the tensor data Analyze reads from ck: the bytes of
// every tensor of rank ≥ 2 with at least one element.
func AnalyzedBytes(ck *checkpoint.Checkpoint) int64 {
	var n int64
	for _, t := range ck.Tensors {
		if len(t.Shape) >= 2 && t.NumElements() > 0 {
			n += t.NumElements() * int64(t.DType.Size())
		}
	}
	return n
}

// SignalScore is one signal of one tensor: its raw value and its
// normalized value in [0, 1].
type SignalScore struct {
	Signal     Signal  `json:"signal"`
	Raw        float64 `json:"raw"`
	Normalized float64 `json:"normalized"`
}

// Candidate is the measured cost of storing a matrix at one precision and,
// for INT8 and INT4, one group size.
type Candidate struct {
	Precision quant.Precision `json:"precision"`
	// GroupSize of an INT8/INT4 candidate (0 for F16).
	GroupSize int `json:"group_size,omitempty"`
	// Bytes is the tensor data written at this precision (codes and
	// scales, or the F16 values), headers excluded.
	Bytes int64 `json:"bytes"`
	// Error is Σ_c m_c Σ_r (w_rc − ŵ_rc)² where ŵ is w quantized and
	// dequantized through the backend (F16: rounded to binary16) and m_c
	// the second moment E[x_c²] of input channel c, or 1 without
	// calibration.
	Error float64 `json:"error"`
	// RelError is Error / Σ_c m_c Σ_r w_rc² (0 for an all-zero tensor).
	RelError float64 `json:"rel_error"`
	// Loss is what the budget solver minimizes: the predicted KL divergence
	// Sensitivity × RelError when the sensitivity was measured, else
	// (1 + Score) × elements × RelError.
	Loss float64 `json:"loss"`
	// Feasible is false when the precision cannot hold the tensor (a scale
	// or a value overflows F16); Reason says why.
	Feasible bool   `json:"feasible"`
	Reason   string `json:"reason,omitempty"`
}

// TensorScore is the analysis of one tensor of the checkpoint.
type TensorScore struct {
	Name      string            `json:"name"`
	DType     safetensors.DType `json:"dtype"`
	Shape     []int64           `json:"shape"`
	Component policy.Component  `json:"component"`
	// Matrix is true for tensors of rank ≥ 2 with at least one element:
	// the ones that are scored and compete for precision. The others are
	// always kept.
	Matrix bool `json:"matrix"`
	// Layer is the calibration layer whose statistics were used, "" when none.
	Layer string `json:"layer,omitempty"`
	// Signals present for this tensor, in Signals order.
	Signals []SignalScore `json:"signals,omitempty"`
	// Score is the weighted mean of the normalized signals present.
	Score float64 `json:"score"`
	// Rank is 1 for the most important matrix (ties broken by name).
	Rank int `json:"rank,omitempty"`
	// MeasuredKL is the KL divergence measured with this matrix alone at
	// the reference candidate, and Sensitivity that KL per unit of its
	// relative error (both 0 when not measured).
	MeasuredKL  float64     `json:"measured_kl,omitempty"`
	Sensitivity float64     `json:"sensitivity,omitempty"`
	Candidates  []Candidate `json:"candidates,omitempty"`

	measured bool // Sensitivity was measured: losses are predicted KL
	group    int  // the analysis's GroupSize, which Candidate(p) looks up
}

// Elements is the product of the shape.
func (t *TensorScore) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Candidate returns the measured candidate of precision p at the
// analysis's group size (GroupSize).
func (t *TensorScore) Candidate(p quant.Precision) (Candidate, bool) {
	return t.CandidateAt(p, t.group)
}

// CandidateAt returns the measured candidate of precision p at group size
// g (ignored for F16; 0 matches the first candidate of precision p).
func (t *TensorScore) CandidateAt(p quant.Precision, g int) (Candidate, bool) {
	for _, c := range t.Candidates {
		if c.Precision == p && (g == 0 || c.GroupSize == 0 || c.GroupSize == g) {
			return c, true
		}
	}
	return Candidate{}, false
}

// feasible reports whether the matrix can be stored at p (F32 always can).
func (t *TensorScore) feasible(p quant.Precision) bool {
	if p == quant.F32 {
		return true
	}
	c, ok := t.Candidate(p)
	return ok && c.Feasible
}

// Analysis holds the scores and measured errors of every tensor.
type Analysis struct {
	GroupSize int `json:"group_size"`
	// GroupSizes are the group sizes of the INT8/INT4 candidates, ascending.
	GroupSizes []int `json:"group_sizes"`
	// Rounding is how the candidates were rounded: "rtn" or "search".
	Rounding string `json:"rounding"`
	// Sensitivity is set when the losses are predicted KL divergences.
	Sensitivity *SensitivitySummary `json:"sensitivity,omitempty"`
	Backend     string              `json:"backend"`
	// Weights are the signal weights asked for.
	Weights map[Signal]float64 `json:"weights"`
	// Used are the signals that contributed to at least one score.
	Used []Signal `json:"used"`
	// Calibrated is true when the errors of at least one matrix are weighted by
	// activation second moments.
	Calibrated bool     `json:"calibrated"`
	Notices    []string `json:"notices,omitempty"`
	// Tensors are all tensors of the checkpoint, in checkpoint order.
	Tensors []*TensorScore `json:"tensors"`
	// TiedHead is the embedding that is also the output head, "" if none.
	TiedHead string `json:"tied_head,omitempty"`

	byName  map[string]*TensorScore
	notify  func(string)
	choices []int // the group sizes the budget may choose (Options.GroupSizes)
}

// Lookup finds a tensor's analysis by name.
func (a *Analysis) Lookup(name string) (*TensorScore, bool) {
	if a.byName == nil {
		a.index()
	}
	t, ok := a.byName[name]
	return t, ok
}

// Matrices are the scored tensors, in checkpoint order.
func (a *Analysis) Matrices() []*TensorScore {
	var out []*TensorScore
	for _, t := range a.Tensors {
		if t.Matrix {
			out = append(out, t)
		}
	}
	return out
}

// Parameters is the number of elements of all tensors.
func (a *Analysis) Parameters() int64 {
	var n int64
	for _, t := range a.Tensors {
		n += t.Elements()
	}
	return n
}

func (a *Analysis) index() {
	a.byName = make(map[string]*TensorScore, len(a.Tensors))
	for _, t := range a.Tensors {
		a.byName[t.Name] = t
	}
}

func (a *Analysis) notice(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	a.Notices = append(a.Notices, s)
	if a.notify != nil {
		a.notify(s)
	}
}

// Analyze scores every tensor of rank ≥ 2 of ck and measures its error at
// each candidate precision. See the package documentation for the signals,
// their normalization and the error metric.
func Analyze(ck *checkpoint.Checkpoint, opt Options) (*Analysis, error) {
	return AnalyzeContext(context.Background(), ck, opt)
}

// AnalyzeContext is Analyze that stops between blocks of rows (at most
// 2^20 elements each) when ctx is done, with an error wrapping the
// context's (errors.Is(err, context.Canceled)).
func AnalyzeContext(ctx context.Context, ck *checkpoint.Checkpoint, opt Options) (*Analysis, error) {
	weights := opt.Weights
	if weights == nil {
		weights = DefaultWeights()
	}
	for s, w := range weights {
		if !slices.Contains(Signals, s) {
			return nil, quant.InputError(fmt.Errorf("unknown importance signal %q (want weight, activation or gradient)", s))
		}
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return nil, quant.InputError(fmt.Errorf("importance signal %q: weight %v must be finite and non-negative", s, w))
		}
	}
	g := opt.GroupSize
	if g == 0 {
		g = quant.DefaultGroupSize
	}
	if g < 1 || g > quant.MaxGroupSize {
		return nil, quant.InputError(fmt.Errorf("group size %d is impossible: want 1..%d", g, quant.MaxGroupSize))
	}
	groups := []int{g}
	for _, x := range opt.GroupSizes {
		if x < 1 || x > quant.MaxGroupSize {
			return nil, quant.InputError(fmt.Errorf("group size %d is impossible: want 1..%d", x, quant.MaxGroupSize))
		}
		if !slices.Contains(groups, x) {
			groups = append(groups, x)
		}
	}
	slices.Sort(groups)
	be := opt.Backend
	if be == nil {
		be = cpu.New(0)
	}
	a := &Analysis{GroupSize: g, GroupSizes: groups, Rounding: "rtn", Backend: be.Name(), Weights: map[Signal]float64{}, notify: opt.Notice}
	a.choices = []int{g}
	if len(opt.GroupSizes) > 0 {
		a.choices = slices.Clone(opt.GroupSizes)
	}
	if opt.Search {
		a.Rounding = "search"
	}
	for _, s := range Signals {
		a.Weights[s] = weights[s]
	}
	if weights[WeightSignal] == 0 && weights[ActivationSignal] == 0 && weights[GradientSignal] == 0 {
		return nil, quant.InputError(errors.New("every importance signal has weight 0"))
	}

	names := make([]string, len(ck.Tensors))
	for i, t := range ck.Tensors {
		names[i] = t.Name
	}
	a.TiedHead = policy.TiedHead(names)

	use := map[Signal]bool{WeightSignal: weights[WeightSignal] > 0}
	if weights[ActivationSignal] > 0 {
		if opt.Calib == nil {
			a.notice("activation signal dropped: no calibration statistics were given")
		} else {
			use[ActivationSignal] = true
		}
	}
	var grads *safetensors.File
	if weights[GradientSignal] > 0 {
		if opt.Grads == "" {
			a.notice("gradient signal dropped: no gradients file was given")
		} else {
			f, err := safetensors.Open(opt.Grads)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			grads = f
			use[GradientSignal] = true
		}
	}

	m := &measurer{ctx: ctx, be: be, groups: groups, search: opt.Search, progress: opt.Progress}
	usedLayers := map[string]bool{}
	for _, ct := range ck.Tensors {
		t := &TensorScore{Name: ct.Name, DType: ct.DType, Shape: slices.Clone(ct.Shape), Component: policy.Classify(ct.Name), group: g}
		a.Tensors = append(a.Tensors, t)
		t.Matrix = len(ct.Shape) >= 2 && ct.NumElements() > 0
		if !t.Matrix {
			continue
		}
		var moment []float64
		var actVar float64
		if opt.Calib != nil {
			layer := LayerName(ct.Name)
			st := opt.Calib.Layers[layer]
			cols := int(ct.Shape[len(ct.Shape)-1])
			switch {
			case st == nil || st.Count == 0:
				hint := ""
				if t.Component == policy.Embeddings {
					hint = " (an embedding lookup has no input activations)"
				}
				if use[ActivationSignal] {
					a.notice("activation signal dropped for %s: no calibration statistics for layer %q%s; its errors are plain squared errors", ct.Name, layer, hint)
				} else {
					a.notice("no calibration statistics for layer %q%s: the errors of %s are plain squared errors", layer, hint, ct.Name)
				}
			case st.Channels() != cols:
				return nil, quant.InputError(&quant.TensorError{Tensor: ct.Name,
					Err: fmt.Errorf("calibration layer %q has %d channels, the matrix has %d input features", layer, st.Channels(), cols)})
			default:
				usedLayers[layer] = true
				t.Layer = layer
				a.Calibrated = true
				moment = opt.Calib.SecondMoment(layer)
				v := make([]float64, cols)
				st.Variance(v)
				actVar = meanOf(v)
			}
		}
		var gt *safetensors.TensorInfo
		if grads != nil {
			info, ok := grads.Header().Lookup(ct.Name)
			switch {
			case !ok:
				a.notice("gradient signal dropped for %s: not in the gradients file %s", ct.Name, opt.Grads)
			case !slices.Equal(info.Shape, ct.Shape):
				return nil, quant.InputError(&quant.TensorError{File: opt.Grads, Tensor: ct.Name,
					Err: fmt.Errorf("gradient shape %v differs from the weight's %v", info.Shape, ct.Shape)})
			default:
				gt = &info
			}
		}
		r, err := m.measure(ct, moment, grads, gt)
		if err != nil {
			return nil, err
		}
		ct.Release()
		t.Candidates = r.cands
		if use[WeightSignal] {
			t.Signals = append(t.Signals, SignalScore{Signal: WeightSignal, Raw: r.rms})
		}
		if use[ActivationSignal] && t.Layer != "" {
			t.Signals = append(t.Signals, SignalScore{Signal: ActivationSignal, Raw: actVar})
		}
		if gt != nil {
			t.Signals = append(t.Signals, SignalScore{Signal: GradientSignal, Raw: r.grad})
		}
	}
	if opt.Calib != nil {
		var unused []string
		for _, n := range opt.Calib.Names() {
			if !usedLayers[n] {
				unused = append(unused, n)
			}
		}
		if len(unused) > 0 {
			a.notice("%d calibration layers match no matrix of the checkpoint and were ignored (first: %q)", len(unused), unused[0])
		}
	}
	if grads != nil {
		var unknown []string
		for _, gi := range grads.Header().Tensors {
			if _, ok := ck.Lookup(gi.Name); !ok {
				unknown = append(unknown, gi.Name)
			}
		}
		if len(unknown) > 0 {
			a.notice("%d tensors of the gradients file %s are not in the checkpoint and were ignored (first: %q)", len(unknown), opt.Grads, unknown[0])
		}
	}
	a.index()
	if opt.Sensitivity != nil {
		if err := a.useSensitivity(opt.Sensitivity); err != nil {
			return nil, err
		}
	}
	a.score(weights)
	return a, nil
}

// useSensitivity checks that the measured KL covers every matrix at a
// measured candidate and turns it into each matrix's sensitivity; if it
// does not cover them all, it is dropped with a notice.
func (a *Analysis) useSensitivity(s *Sensitivity) error {
	if s.Search != (a.Rounding == "search") {
		return fmt.Errorf("sensitivity: measured with search=%v, the candidates with rounding %s", s.Search, a.Rounding)
	}
	mats := a.Matrices()
	for _, t := range mats {
		if _, ok := s.KL[t.Name]; !ok {
			a.notice("measured sensitivity not used: no KL for %s; losses are importance-weighted errors", t.Name)
			return nil
		}
		if _, ok := t.CandidateAt(s.Precision, s.GroupSize); !ok {
			return fmt.Errorf("sensitivity: reference %s g%d is not a candidate of %s", s.Precision, s.GroupSize, t.Name)
		}
	}
	for _, t := range mats {
		c, _ := t.CandidateAt(s.Precision, s.GroupSize)
		t.measured, t.MeasuredKL = true, s.KL[t.Name]
		if c.Feasible && c.RelError > 0 {
			t.Sensitivity = t.MeasuredKL / c.RelError
		}
	}
	a.Sensitivity = &SensitivitySummary{Precision: s.Precision, GroupSize: s.GroupSize, Positions: s.Positions}
	return nil
}

// SensitivitySummary says how the sensitivities were measured.
type SensitivitySummary struct {
	Precision quant.Precision `json:"precision"`
	GroupSize int             `json:"group_size"`
	Positions int             `json:"positions"`
}

// score normalizes each signal across the matrices that have it, combines
// them, ranks the matrices and fills in the losses.
func (a *Analysis) score(weights map[Signal]float64) {
	mats := a.Matrices()
	for _, s := range Signals {
		var refs []*SignalScore
		for _, t := range mats {
			for i := range t.Signals {
				if t.Signals[i].Signal == s {
					refs = append(refs, &t.Signals[i])
				}
			}
		}
		if len(refs) == 0 {
			continue
		}
		a.Used = append(a.Used, s)
		raws := make([]float64, len(refs))
		for i, r := range refs {
			raws[i] = r.Raw
		}
		for i, n := range Normalize(raws) {
			refs[i].Normalized = n
		}
	}
	for _, t := range mats {
		var sum, wsum float64
		for _, s := range t.Signals {
			sum += weights[s.Signal] * s.Normalized
			wsum += weights[s.Signal]
		}
		t.Score = 0
		if wsum > 0 {
			t.Score = sum / wsum
		} else {
			a.notice("no importance signal for %s: its score is 0", t.Name)
		}
		n := float64(t.Elements())
		for i := range t.Candidates {
			c := &t.Candidates[i]
			switch {
			case !c.Feasible:
			case t.measured:
				c.Loss = t.Sensitivity * c.RelError
			default:
				c.Loss = (1 + t.Score) * n * c.RelError
			}
		}
	}
	order := slices.Clone(mats)
	sortByImportance(order)
	for i, t := range order {
		t.Rank = i + 1
	}
}

// sortByImportance orders matrices by descending score, ties by name.
func sortByImportance(ts []*TensorScore) {
	sort.SliceStable(ts, func(i, j int) bool {
		if ts[i].Score != ts[j].Score {
			return ts[i].Score > ts[j].Score
		}
		return ts[i].Name < ts[j].Name
	})
}

// Normalize maps raw signal values to [0, 1] by min-max scaling of their
// logarithms:
//
//	n_i = (ln r_i − min_j ln r_j) / (max_j ln r_j − min_j ln r_j)
//
// over the positive values. A value ≤ 0 (an all-zero tensor) gets 0, the
// bottom; when all positive values are equal every positive value gets 0.5.
func Normalize(raw []float64) []float64 {
	out := make([]float64, len(raw))
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range raw {
		if r > 0 {
			l := math.Log(r)
			lo, hi = min(lo, l), max(hi, l)
		}
	}
	for i, r := range raw {
		switch {
		case !(r > 0):
			out[i] = 0
		case hi == lo:
			out[i] = 0.5
		default:
			out[i] = (math.Log(r) - lo) / (hi - lo)
		}
	}
	return out
}

func meanOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// measurer holds the scratch buffers of Analyze.
type measurer struct {
	ctx      context.Context
	be       quant.Backend
	groups   []int
	search   bool
	progress func(tensor string, deltaBytes int64)
	w, deq   []float32
	gr       []float32
	packed   []byte
	scales   []uint16
	half     []byte
}

type measured struct {
	rms, grad float64
	cands     []Candidate
}

// measure streams a matrix block by block of rows: its weight statistics
// (Backend.ChannelStats), its gradient statistics, and for every candidate
// the per-input-channel sums of squared errors, weighted at the end by
// moment (nil: all ones).
func (m *measurer) measure(t *checkpoint.Tensor, moment []float64, gf *safetensors.File, gt *safetensors.TensorInfo) (measured, error) {
	cols := int(t.Shape[len(t.Shape)-1])
	rows := int(t.NumElements() / int64(cols))
	raw := t.Raw()
	esz := t.DType.Size()
	var graw []byte
	if gt != nil {
		graw = gf.Data(*gt)
	}
	wst := quant.NewStats(cols)
	gst := quant.NewStats(cols)
	energy := make([]float64, cols)
	// Candidates: INT4 then INT8, each from the largest group (fewest
	// bytes) down, then F16.
	var cands []Candidate
	for _, p := range Candidates {
		if !p.Quantized() {
			cands = append(cands, Candidate{Precision: p, Feasible: true, Bytes: dataBytes(p, rows, cols, 0)})
			continue
		}
		for i := len(m.groups) - 1; i >= 0; i-- {
			g := m.groups[i]
			cands = append(cands, Candidate{Precision: p, GroupSize: g, Feasible: true, Bytes: dataBytes(p, rows, cols, g)})
		}
	}
	sq := make([][]float64, len(cands))
	for k := range sq {
		sq[k] = make([]float64, cols)
	}
	var diag []float64 // the scale search's weights
	if m.search && moment != nil {
		diag = gptq.Damped(moment, 0)
	}
	tensorErr := func(err error) error {
		return &quant.TensorError{File: t.File.Path(), Tensor: t.Name, Err: err}
	}
	per := max(1, blockElems/cols)
	for r0 := 0; r0 < rows; r0 += per {
		if err := stop.Err(m.ctx); err != nil {
			return measured{}, err
		}
		r1 := min(rows, r0+per)
		n := (r1 - r0) * cols
		w := grow(&m.w, n)
		if err := checkpoint.DecodeFloat32(w, raw[r0*cols*esz:r1*cols*esz], t.DType); err != nil {
			return measured{}, tensorErr(err)
		}
		for i, v := range w {
			if !quant.IsFinite(v) {
				return measured{}, quant.InputError(tensorErr(&quant.NonFiniteError{Index: r0*cols + i, Value: v}))
			}
		}
		if err := m.be.ChannelStats(wst, w, r1-r0); err != nil {
			return measured{}, tensorErr(err)
		}
		for i, v := range w {
			energy[i%cols] += float64(v) * float64(v)
		}
		for k := range cands {
			c := &cands[k]
			if !c.Feasible {
				continue
			}
			deq, reason, err := m.roundTrip(c.Precision, c.GroupSize, w, r1-r0, cols, diag)
			if err != nil {
				var nf *quant.NonFiniteError
				if errors.As(err, &nf) {
					return measured{}, quant.InputError(tensorErr(err))
				}
				return measured{}, tensorErr(err)
			}
			if reason != "" {
				c.Feasible, c.Reason = false, reason
				continue
			}
			for i, v := range w {
				d := float64(v) - float64(deq[i])
				sq[k][i%cols] += d * d
			}
		}
		if gt != nil {
			gr := grow(&m.gr, n)
			gesz := gt.DType.Size()
			if err := checkpoint.DecodeFloat32(gr, graw[r0*cols*gesz:r1*cols*gesz], gt.DType); err != nil {
				return measured{}, quant.InputError(&quant.TensorError{File: gf.Path(), Tensor: gt.Name, Err: err})
			}
			for i, v := range gr {
				if !quant.IsFinite(v) || v < 0 {
					return measured{}, quant.InputError(&quant.TensorError{File: gf.Path(), Tensor: gt.Name,
						Err: fmt.Errorf("gradient value %v at index %d: the file must hold accumulated |grad| or grad², finite and non-negative", v, r0*cols+i)})
				}
			}
			if err := m.be.ChannelStats(gst, gr, r1-r0); err != nil {
				return measured{}, tensorErr(err)
			}
		}
		if m.progress != nil {
			m.progress(t.Name, int64(n*esz))
		}
	}
	if gt != nil {
		gf.Release(*gt)
	}
	var r measured
	ms := make([]float64, cols)
	wst.Variance(ms)
	for c := range ms {
		ms[c] += wst.Mean[c] * wst.Mean[c]
	}
	r.rms = math.Sqrt(meanOf(ms))
	r.grad = meanOf(gst.Mean)
	weigh := func(v []float64) float64 {
		var s float64
		for c, x := range v {
			if moment != nil {
				x *= moment[c]
			}
			s += x
		}
		return s
	}
	e0 := weigh(energy)
	for k := range cands {
		c := &cands[k]
		if !c.Feasible {
			continue
		}
		c.Error = weigh(sq[k])
		if e0 > 0 {
			c.RelError = c.Error / e0
		}
	}
	r.cands = cands
	return r, nil
}

// roundTrip stores a block at precision p (group size g) and reads it back,
// through the backend for INT8 and INT4, with absmax scales or, when
// searching, gptq.SearchScales' scales weighted by diag (nil: unweighted),
// and by binary16 rounding for F16. A non-empty reason means p cannot hold
// the block.
func (m *measurer) roundTrip(p quant.Precision, g int, w []float32, rows, cols int, diag []float64) ([]float32, string, error) {
	deq := grow(&m.deq, len(w))
	if p == quant.F16 {
		h := grow(&m.half, 2*len(w))
		if err := checkpoint.EncodeFloat32(h, w, safetensors.F16); err != nil {
			return nil, err.Error(), nil
		}
		if err := checkpoint.DecodeFloat32(deq, h, safetensors.F16); err != nil {
			return nil, "", err
		}
		return deq, "", nil
	}
	l := quant.Layout{Rows: rows, Cols: cols, GroupSize: g, Precision: p}
	err := quantRoundTrip(m.be, deq, grow(&m.packed, l.PackedBytes()), grow(&m.scales, l.NumScales()), w, l, m.search, diag)
	var so *quant.ScaleOverflowError
	switch {
	case errors.As(err, &so):
		return nil, so.Error(), nil
	case err != nil:
		return nil, "", err
	}
	return deq, "", nil
}

// quantRoundTrip stores w in layout l and reads it back into deq, as the
// quantizer would: scales by the backend's absmax GroupScales or, with
// search, gptq.SearchScales weighted by diag (nil: unweighted), then the
// backend's Quantize and Dequantize. packed and sc are scratch of the
// layout's sizes.
func quantRoundTrip(be quant.Backend, deq []float32, packed []byte, sc []uint16, w []float32, l quant.Layout, search bool, diag []float64) error {
	var err error
	if search {
		err = gptq.SearchScales(sc, w, diag, l)
	} else {
		err = be.GroupScales(sc, w, l)
	}
	if err != nil {
		return err
	}
	if err := be.Quantize(packed, w, sc, l); err != nil {
		return err
	}
	return be.Dequantize(deq, packed, sc, l)
}

// dataBytes is the size of the tensor data qformat writes for a
// rows × cols matrix at precision p.
func dataBytes(p quant.Precision, rows, cols, g int) int64 {
	switch p {
	case quant.F32:
		return 4 * int64(rows) * int64(cols)
	case quant.F16:
		return 2 * int64(rows) * int64(cols)
	}
	l := quant.Layout{Rows: rows, Cols: cols, GroupSize: g, Precision: p}
	return int64(l.Rows)*int64(l.RowBytes()) + 2*int64(l.Rows)*int64(l.GroupsPerRow())
}

func grow[T any](s *[]T, n int) []T {
	if cap(*s) < n {
		*s = make([]T, n)
	}
	*s = (*s)[:n]
	return *s
}
