package importance

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/internal/stop"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Metadata of calibration files.
const (
	// CalibrationKey is the metadata key that says what a calibration file holds.
	CalibrationKey = "mixq.calibration"
	// StatsFormat marks a statistics file written by CalibStats.Write.
	StatsFormat = "stats/1"
	// ActivationsFormat marks an activation dump written by `mixq calibrate`
	// (the key is optional in activation dumps: any file that is not a
	// statistics file is read as one).
	ActivationsFormat = "activations/1"
)

// Suffixes of the three tensors a statistics file holds per layer.
const (
	meanSuffix  = ".mean"
	m2Suffix    = ".m2"
	countSuffix = ".count"
)

// BatchElements bounds the activations converted and reduced at a time when
// an activation dump is read: a batch is max(1, BatchElements/in) tokens.
// It is what keeps memory bounded whatever the number of tokens in a file.
const BatchElements = 1 << 20

// CalibStats are the per-channel statistics of the input activations of
// every observed layer, keyed by layer name (a weight's name without
// ".weight").
type CalibStats struct {
	Layers map[string]*quant.Stats
}

// NewCalibStats returns statistics with no layer.
func NewCalibStats() *CalibStats { return &CalibStats{Layers: map[string]*quant.Stats{}} }

// Names lists the layers in sorted order.
func (s *CalibStats) Names() []string {
	out := make([]string, 0, len(s.Layers))
	for k := range s.Layers {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Merge folds o into s, layer by layer in sorted order, with
// quant.Stats.Merge; a layer only o has is copied. Layers present in both
// must have the same number of channels.
func (s *CalibStats) Merge(o *CalibStats) error {
	for _, name := range o.Names() {
		src := o.Layers[name]
		dst := s.Layers[name]
		if dst == nil {
			dst = quant.NewStats(src.Channels())
			s.Layers[name] = dst
		}
		if err := dst.Merge(src); err != nil {
			return quant.InputError(fmt.Errorf("calibration layer %q: %v", name, err))
		}
	}
	return nil
}

// SecondMoment returns E[x²] = M2/n + mean² per channel of a layer, or nil
// when the layer is absent or saw no token.
func (s *CalibStats) SecondMoment(layer string) []float64 {
	st := s.Layers[layer]
	if st == nil || st.Count == 0 {
		return nil
	}
	out := make([]float64, st.Channels())
	st.Variance(out)
	for c, m := range st.Mean {
		out[c] += m * m
	}
	return out
}

// Calibration accumulates activation statistics as they stream by: Start,
// any number of Observe calls, then End. Only the per-channel count, mean
// and M2 of each layer are kept, never the activations, so memory is
// O(layers × channels) whatever the number of tokens. It is not safe for
// concurrent use.
type Calibration struct {
	be    quant.Backend
	stats *CalibStats
	ended bool
}

// Start begins a calibration whose reductions run on be (cpu.New(0) when nil).
func Start(be quant.Backend) *Calibration {
	if be == nil {
		be = cpu.New(0)
	}
	return &Calibration{be: be, stats: NewCalibStats()}
}

// Observe reduces one batch of a layer's input activations, x row-major
// [tokens, in], with Backend.ChannelStats and merges it into the layer's
// statistics. A layer's channel count is fixed by its first batch; a batch
// of zero tokens changes nothing. x is not retained.
func (c *Calibration) Observe(layer string, x []float32, tokens, in int) error {
	switch {
	case c.ended:
		return errors.New("importance: Observe after End")
	case layer == "":
		return errors.New("importance: Observe: empty layer name")
	case tokens < 0 || in <= 0:
		return fmt.Errorf("importance: Observe %q: %d tokens × %d channels", layer, tokens, in)
	case len(x) != tokens*in:
		return fmt.Errorf("importance: Observe %q: %d values for %d tokens × %d channels", layer, len(x), tokens, in)
	}
	s := c.stats.Layers[layer]
	if s != nil && s.Channels() != in {
		return quant.InputError(fmt.Errorf("calibration layer %q: batch has %d channels, earlier batches had %d", layer, in, s.Channels()))
	}
	if tokens == 0 {
		return nil
	}
	fresh := s == nil
	if fresh {
		s = quant.NewStats(in)
	}
	if err := c.be.ChannelStats(s, x, tokens); err != nil {
		return fmt.Errorf("calibration layer %q: %w", layer, err)
	}
	if fresh {
		c.stats.Layers[layer] = s
	}
	return nil
}

// merge folds finished statistics (from a statistics file) into the
// running ones.
func (c *Calibration) merge(o *CalibStats) error {
	if c.ended {
		return errors.New("importance: merge after End")
	}
	return c.stats.Merge(o)
}

// End finishes the calibration and returns its statistics; the Calibration
// accepts nothing afterwards.
func (c *Calibration) End() (*CalibStats, error) {
	if c.ended {
		return nil, errors.New("importance: End called twice")
	}
	c.ended = true
	return c.stats, nil
}

// ReadActivations streams activation dumps (safetensors files whose tensors
// are named after layers, each [tokens, in_features] in F32, F16 or BF16,
// as `mixq calibrate` writes them) through a Calibration, file by file in
// the given order and tensor by tensor in file order, BatchElements at a
// time.
func ReadActivations(paths []string, be quant.Backend) (*CalibStats, error) {
	c := Start(be)
	for _, p := range paths {
		if err := c.readActivations(context.Background(), p, nil); err != nil {
			return nil, err
		}
	}
	return c.End()
}

// Read reads calibration files of either kind, telling them apart by their
// mixq.calibration metadata (StatsFormat, else an activation dump), and
// merges them in the given order.
func Read(paths []string, be quant.Backend) (*CalibStats, error) {
	return ReadContext(context.Background(), paths, be, nil)
}

// ReadContext is Read that stops between batches when ctx is done, with an
// error wrapping the context's (errors.Is(err, context.Canceled)), and
// hands progress, when not nil, the bytes of tensor data each batch of an
// activation dump held, or all of a statistics file's once it is merged.
func ReadContext(ctx context.Context, paths []string, be quant.Backend, progress func(deltaBytes int64)) (*CalibStats, error) {
	c := Start(be)
	for _, p := range paths {
		f, err := safetensors.Open(p)
		if err != nil {
			return nil, err
		}
		isStats := f.Header().Metadata[CalibrationKey] == StatsFormat
		f.Close()
		if isStats {
			s, err := ReadStats(p)
			if err != nil {
				return nil, err
			}
			if err := c.merge(s); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if progress != nil {
				var n int64
				for _, st := range s.Layers {
					n += int64(8*(len(st.Mean)+len(st.M2)) + 8)
				}
				progress(n)
			}
			continue
		}
		if err := c.readActivations(ctx, p, progress); err != nil {
			return nil, err
		}
	}
	return c.End()
}

func (c *Calibration) readActivations(ctx context.Context, path string, progress func(int64)) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := f.Header()
	if h.Metadata[CalibrationKey] == StatsFormat {
		return quant.InputError(fmt.Errorf("%s: a statistics file, not activations (read it with ReadStats or Read)", path))
	}
	var buf []float32
	for _, t := range h.Tensors {
		bad := func(format string, a ...any) error {
			return quant.InputError(&quant.TensorError{File: path, Tensor: t.Name, Err: fmt.Errorf(format, a...)})
		}
		if t.Name == "" { // found by FuzzCalibrationFile: Observe's error was not an input error
			return bad("an activation tensor needs a layer name")
		}
		if len(t.Shape) != 2 {
			return bad("activations must be [tokens, in_features], have shape %v", t.Shape)
		}
		tokens, in := int(t.Shape[0]), int(t.Shape[1])
		if in == 0 {
			if tokens == 0 {
				continue
			}
			return bad("activations have no channel")
		}
		esz := t.DType.Size()
		rows := max(1, BatchElements/in)
		raw := f.Data(t)
		for r0 := 0; r0 < tokens; r0 += rows {
			if err := stop.Err(ctx); err != nil {
				return err
			}
			r1 := min(tokens, r0+rows)
			n := (r1 - r0) * in
			if cap(buf) < n {
				buf = make([]float32, n)
			}
			x := buf[:n]
			if err := checkpoint.DecodeFloat32(x, raw[r0*in*esz:r1*in*esz], t.DType); err != nil {
				return bad("%v", err)
			}
			for i, v := range x {
				if !quant.IsFinite(v) {
					return bad("non-finite activation %v at index %d", v, r0*in+i)
				}
			}
			if err := c.Observe(t.Name, x, r1-r0, in); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if progress != nil {
				progress(int64(n * esz))
			}
		}
		f.Release(t)
	}
	return nil
}

// FromModel is FromModelContext without cancellation or progress.
func FromModel(m *model.Model, seqs [][]int, be quant.Backend) (*CalibStats, error) {
	return FromModelContext(context.Background(), m, seqs, be, nil)
}

// FromModelContext runs the model over each sequence (one at a time, in
// order) and reduces the input of every linear layer with be (m.Backend()
// when nil). The layer name is the weight name without ".weight"; a tied
// head's input arrives under the embedding's name, as the model's Observer
// reports it. progress, when not nil, receives the tokens of each sequence
// layer by layer as it runs (see model.LayerProgress). When ctx is done the forward pass stops (see
// model.Session.ForwardContext) and the error wraps the context's.
func FromModelContext(ctx context.Context, m *model.Model, seqs [][]int, be quant.Backend, progress func(deltaTokens int)) (*CalibStats, error) {
	if be == nil {
		be = m.Backend()
	}
	c := Start(be)
	var obsErr error
	obs := func(weight string, x []float32, tokens, in int) {
		if obsErr == nil {
			obsErr = c.Observe(LayerName(weight), x, tokens, in)
		}
	}
	for i, seq := range seqs {
		if len(seq) == 0 {
			continue
		}
		s := m.NewSession(1, len(seq))
		if progress != nil {
			s.OnLayer = model.LayerProgress(len(seq), progress)
		}
		if _, err := s.ForwardContext(ctx, [][]int{seq}, obs); err != nil {
			return nil, fmt.Errorf("calibration sequence %d: %w", i, err)
		}
		if obsErr != nil {
			return nil, obsErr
		}
	}
	return c.End()
}

// LayerName is the calibration layer of a weight: its name without ".weight".
func LayerName(weight string) string { return strings.TrimSuffix(weight, ".weight") }

// Write stores the statistics in the mixq statistics layout: for every
// layer, in sorted order, the tensors <layer>.mean F64 [in], <layer>.m2 F64
// [in] and <layer>.count I64 [1], with metadata mixq.calibration=stats/1.
// Values are written bit for bit, so ReadStats gives back identical
// statistics. The file appears atomically.
func (s *CalibStats) Write(path string) error {
	names := s.Names()
	var specs []safetensors.Spec
	for _, n := range names {
		ch := int64(s.Layers[n].Channels())
		specs = append(specs,
			safetensors.Spec{Name: n + meanSuffix, DType: safetensors.F64, Shape: []int64{ch}},
			safetensors.Spec{Name: n + m2Suffix, DType: safetensors.F64, Shape: []int64{ch}},
			safetensors.Spec{Name: n + countSuffix, DType: safetensors.I64, Shape: []int64{1}},
		)
	}
	w, err := safetensors.Create(path, specs, map[string]string{CalibrationKey: StatsFormat})
	if err != nil {
		return err
	}
	defer w.Abort()
	f64 := func(v []float64) []byte {
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		}
		return b
	}
	for _, n := range names {
		st := s.Layers[n]
		if len(st.M2) != len(st.Mean) {
			return fmt.Errorf("calibration layer %q: %d means and %d M2", n, len(st.Mean), len(st.M2))
		}
		cnt := make([]byte, 8)
		binary.LittleEndian.PutUint64(cnt, uint64(st.Count))
		if err := errors.Join(
			w.Write(n+meanSuffix, f64(st.Mean)),
			w.Write(n+m2Suffix, f64(st.M2)),
			w.Write(n+countSuffix, cnt),
		); err != nil {
			return err
		}
	}
	return w.Close()
}

// ReadStats reads a statistics file written by Write. It checks the
// metadata, that every layer has its three tensors with the documented
// dtypes and shapes, and that counts and M2 are non-negative and every
// value finite.
func ReadStats(path string) (*CalibStats, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := f.Header()
	if got := h.Metadata[CalibrationKey]; got != StatsFormat {
		return nil, quant.InputError(fmt.Errorf("%s: not a mixq statistics file (metadata %s=%q, want %q)", path, CalibrationKey, got, StatsFormat))
	}
	type parts struct{ mean, m2, count *safetensors.TensorInfo }
	layers := map[string]*parts{}
	get := func(name string) *parts {
		p := layers[name]
		if p == nil {
			p = &parts{}
			layers[name] = p
		}
		return p
	}
	for i := range h.Tensors {
		t := &h.Tensors[i]
		switch {
		case strings.HasSuffix(t.Name, meanSuffix):
			get(strings.TrimSuffix(t.Name, meanSuffix)).mean = t
		case strings.HasSuffix(t.Name, m2Suffix):
			get(strings.TrimSuffix(t.Name, m2Suffix)).m2 = t
		case strings.HasSuffix(t.Name, countSuffix):
			get(strings.TrimSuffix(t.Name, countSuffix)).count = t
		default:
			return nil, quant.InputError(&quant.TensorError{File: path, Tensor: t.Name, Err: errors.New("not a .mean, .m2 or .count tensor")})
		}
	}
	out := NewCalibStats()
	for name, p := range layers {
		bad := func(format string, a ...any) error {
			return quant.InputError(fmt.Errorf("%s: layer %q: %s", path, name, fmt.Sprintf(format, a...)))
		}
		if p.mean == nil || p.m2 == nil || p.count == nil {
			return nil, bad("needs %s, %s and %s tensors", meanSuffix, m2Suffix, countSuffix)
		}
		if p.mean.DType != safetensors.F64 || p.m2.DType != safetensors.F64 || p.count.DType != safetensors.I64 {
			return nil, bad("dtypes %s/%s/%s, want F64/F64/I64", p.mean.DType, p.m2.DType, p.count.DType)
		}
		if len(p.mean.Shape) != 1 || p.mean.Shape[0] < 1 || !slices.Equal(p.mean.Shape, p.m2.Shape) || !slices.Equal(p.count.Shape, []int64{1}) {
			return nil, bad("shapes %v/%v/%v, want [in]/[in]/[1]", p.mean.Shape, p.m2.Shape, p.count.Shape)
		}
		st := quant.NewStats(int(p.mean.Shape[0]))
		st.Count = int64(binary.LittleEndian.Uint64(f.Data(*p.count)))
		if st.Count < 0 {
			return nil, bad("negative count %d", st.Count)
		}
		mean, m2 := f.Data(*p.mean), f.Data(*p.m2)
		for c := range st.Mean {
			st.Mean[c] = math.Float64frombits(binary.LittleEndian.Uint64(mean[8*c:]))
			st.M2[c] = math.Float64frombits(binary.LittleEndian.Uint64(m2[8*c:]))
			if math.IsNaN(st.Mean[c]) || math.IsInf(st.Mean[c], 0) || math.IsNaN(st.M2[c]) || math.IsInf(st.M2[c], 0) || st.M2[c] < 0 {
				return nil, bad("channel %d has mean %v and M2 %v", c, st.Mean[c], st.M2[c])
			}
		}
		out.Layers[name] = st
	}
	return out, nil
}
