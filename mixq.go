package mixq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
)

// DefaultMaxShardSize matches the Hugging Face default of 5 GB per shard.
const DefaultMaxShardSize = 5_000_000_000

// Policy chooses the precision of each tensor.
type Policy interface {
	Name() string
	Decide(policy.Tensor) policy.Decision
}

// Options configures planning and quantization. The zero value means: the
// static policy with the built-in rules, group size 128, 5 GB shards, the
// CPU backend, no progress reporting.
type Options struct {
	Policy       Policy
	GroupSize    int
	MaxShardSize int64
	Backend      quant.Backend
	// Force replaces an existing output.
	Force bool
	// Progress, when set, is called after each block with the input bytes
	// processed since the last call.
	Progress func(tensor string, deltaBytes int64)
	// Notice, when set, receives one-line notices (files of the input that
	// the output does not carry, and why).
	Notice func(string)
	// Rounder, when set, chooses the scales and codes of quantized
	// tensors (see Rounder); nil means absmax round-to-nearest.
	Rounder Rounder
}

func (o Options) notice(format string, args ...any) {
	if o.Notice != nil {
		o.Notice(fmt.Sprintf(format, args...))
	}
}

// companions plans the copy of the input's non-weight files (tokenizer,
// generation config, chat template, ...) into an output, and reports the
// files it leaves out.
func companions(ck *checkpoint.Checkpoint, opt Options) ([]shards.Extra, error) {
	carry, skipped, err := ck.Companions()
	if err != nil {
		return nil, err
	}
	for _, s := range skipped {
		opt.notice("not carried into the output: %s: %s", s.Name, s.Why)
	}
	extra := make([]shards.Extra, len(carry))
	for i, c := range carry {
		extra[i] = shards.Extra{Name: c.Name, Src: c.Path, Size: c.Size}
	}
	return extra, nil
}

func (o Options) backend() quant.Backend {
	if o.Backend != nil {
		return o.Backend
	}
	return cpu.New(0)
}

// Open opens an input checkpoint: one .safetensors file or a Hugging Face
// directory. Only headers are read; tensor data is mapped, not loaded.
func Open(path string) (*checkpoint.Checkpoint, error) {
	return checkpoint.Open(path, checkpoint.Options{})
}

// OpenQuantized opens a checkpoint written by Quantize.
func OpenQuantized(path string) (*qformat.Model, error) { return qformat.Open(path) }

// StaticPolicy returns the rule-based policy for a checkpoint, with the
// user's rules in front of the built-in ones and tied embeddings detected.
func StaticPolicy(ck *checkpoint.Checkpoint, user []policy.Rule) *policy.Static {
	s := policy.NewStatic(user)
	names := make([]string, len(ck.Tensors))
	for i, t := range ck.Tensors {
		names[i] = t.Name
	}
	s.TiedHead = policy.TiedHead(names)
	return s
}

// PlanQuantization decides every tensor's precision and lays out the output,
// reading headers only.
func PlanQuantization(ck *checkpoint.Checkpoint, opt Options) (*qformat.Plan, error) {
	pol := opt.Policy
	if pol == nil {
		pol = StaticPolicy(ck, nil)
	}
	inputs := make([]qformat.Input, len(ck.Tensors))
	for i, t := range ck.Tensors {
		inputs[i] = qformat.Input{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	shard := opt.MaxShardSize
	if shard == 0 {
		shard = DefaultMaxShardSize
	}
	p, err := qformat.Build(inputs, pol.Decide, qformat.Options{
		GroupSize:    opt.GroupSize,
		MaxShardSize: shard,
		Config:       ck.Config,
		PolicyName:   pol.Name(),
	})
	if err != nil {
		return nil, err
	}
	// The tokenizer and the other non-weight files go along, and count in
	// the estimate like every other byte written.
	if p.Layout.Extra, err = companions(ck, opt); err != nil {
		return nil, err
	}
	return p, nil
}

// Result reports a finished quantization.
type Result struct {
	Output   string            `json:"output"`
	Backend  string            `json:"backend"`
	Estimate *qformat.Estimate `json:"estimate"`
	// WrittenBytes is the size of every file in the output directory,
	// measured after writing.
	WrittenBytes int64 `json:"written_bytes"`
}

// blockElems bounds the elements converted at a time, so that memory stays
// at a few tens of MiB whatever the tensor size.
const blockElems = 1 << 22

// Quantize writes the quantized checkpoint described by plan into out.
func Quantize(ctx context.Context, ck *checkpoint.Checkpoint, plan *qformat.Plan, out string, opt Options) (*Result, error) {
	if err := checkOutput(ck, out); err != nil {
		return nil, err
	}
	be := opt.backend()
	w, err := createLayout(out, plan.Layout, opt.Force)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	q := newQuantizer(plan, be, w, opt.Progress)
	q.rounder = opt.Rounder
	for i := range plan.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		it := &plan.Items[i]
		t, found := ck.Lookup(it.Input.Name)
		if !found {
			return nil, fmt.Errorf("tensor %q vanished from the checkpoint", it.Input.Name)
		}
		// Kept tensors are copied straight from the mapping, on this
		// goroutine: a fault there is an error naming the file too.
		var err error
		if ferr := fault.Catch(func() { err = q.tensor(ctx, t, it) }); ferr != nil {
			err = quant.InputError(ferr)
		}
		if err != nil {
			var te *quant.TensorError
			if !errors.As(err, &te) {
				err = &quant.TensorError{File: t.File.Path(), Tensor: t.Name, Err: err}
			}
			return nil, err
		}
		t.Release()
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	ok = true
	written, err := DirBytes(out)
	if err != nil {
		return nil, err
	}
	return &Result{Output: out, Backend: be.Name(), Estimate: plan.Estimate(0), WrittenBytes: written}, nil
}

// checkOutput refuses an output that is, contains, or lies inside any file
// of the input checkpoint (see safeout.CheckDisjoint). Shard files count by
// their real paths, so a checkpoint of symlinks (a Hugging Face cache
// snapshot) protects the blobs they point to.
func checkOutput(ck *checkpoint.Checkpoint, out string) error {
	return safeout.CheckDisjoint(out, CheckpointInputs(ck)...)
}

// CheckpointInputs lists the paths an opened checkpoint reads: its
// directory (or, for a single-file input, that file and the config.json
// beside it) and every shard file.
func CheckpointInputs(ck *checkpoint.Checkpoint) []string {
	ins := InputPaths(ck.Path)
	seen := map[string]bool{}
	for _, t := range ck.Tensors {
		if p := t.File.Path(); !seen[p] {
			seen[p] = true
			ins = append(ins, p)
		}
	}
	return ins
}

// InputPaths lists what a model path given on the command line stands for,
// before it is opened: a directory, or a file and the config.json (and
// other files mixq reads) beside it. An index file stands for its directory.
func InputPaths(path string) []string {
	fi, err := os.Stat(path)
	if err != nil {
		return []string{path}
	}
	if fi.IsDir() {
		// The directory's files count one by one too: in a Hugging Face
		// cache snapshot they are symlinks to blobs elsewhere, and their
		// real paths are what must not be written over.
		ins := []string{path}
		ents, _ := os.ReadDir(path)
		for _, e := range ents {
			ins = append(ins, filepath.Join(path, e.Name()))
		}
		return ins
	}
	if filepath.Base(path) == checkpoint.IndexName {
		return []string{path, filepath.Dir(path)}
	}
	return []string{path, filepath.Join(filepath.Dir(path), checkpoint.ConfigName)}
}

// DirBytes sums the sizes of the regular files in dir (not recursive).
func DirBytes(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}

// quantizer holds the buffers reused across tensors.
type quantizer struct {
	be       quant.Backend
	w        *shards.Writer
	progress func(string, int64)
	rounder  Rounder
	f32      []float32
	bytes    []byte
	scales   []uint16
}

func newQuantizer(plan *qformat.Plan, be quant.Backend, w *shards.Writer, progress func(string, int64)) *quantizer {
	return &quantizer{be: be, w: w, progress: progress}
}

func (q *quantizer) report(name string, n int64) {
	if q.progress != nil {
		q.progress(name, n)
	}
}

// tensor converts one input tensor block by block.
func (q *quantizer) tensor(ctx context.Context, t *checkpoint.Tensor, it *qformat.Item) error {
	raw := t.Raw()
	esz := t.DType.Size()
	n := int(it.Input.NumElements())
	if it.Decision.Keep {
		// Kept tensors are copied verbatim, but a NaN or Inf is still an
		// error: a checkpoint with one is broken whatever we store.
		for lo := 0; lo < n; lo += blockElems {
			hi := min(n, lo+blockElems)
			if err := q.load(raw, t.DType, lo, hi); err != nil {
				return err
			}
			if err := q.w.Write(it.Outputs[0].Name, raw[lo*esz:hi*esz]); err != nil {
				return err
			}
			q.report(t.Name, int64((hi-lo)*esz))
		}
		return nil
	}
	switch it.Decision.Precision {
	case quant.F32, quant.F16:
		for lo := 0; lo < n; lo += blockElems {
			hi := min(n, lo+blockElems)
			if err := q.load(raw, t.DType, lo, hi); err != nil {
				return err
			}
			b, err := q.encode(it.Outputs[0].DType, lo)
			if err != nil {
				return err
			}
			if err := q.w.Write(it.Outputs[0].Name, b); err != nil {
				return err
			}
			q.report(t.Name, int64((hi-lo)*esz))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	default:
		return q.quantized(ctx, t, it)
	}
}

// quantized streams blocks of whole rows through the backend.
func (q *quantizer) quantized(ctx context.Context, t *checkpoint.Tensor, it *qformat.Item) error {
	l := it.Layout
	raw := t.Raw()
	esz := t.DType.Size()
	rowsPer := max(1, blockElems/l.Cols)
	allScales := make([]uint16, 0, l.NumScales())
	for r0 := 0; r0 < l.Rows; r0 += rowsPer {
		r1 := min(l.Rows, r0+rowsPer)
		bl := l
		bl.Rows = r1 - r0
		lo, hi := r0*l.Cols, r1*l.Cols
		if err := q.decode(raw, t.DType, lo, hi); err != nil {
			return err
		}
		sc := grow16(&q.scales, bl.NumScales())
		packed := grow8(&q.bytes, bl.PackedBytes())
		if err := q.groups(t.Name, r0, packed, sc, bl); err != nil {
			return shiftError(err, r0, l.Cols, l.GroupsPerRow())
		}
		if err := q.w.Write(it.Outputs[0].Name, packed); err != nil {
			return err
		}
		allScales = append(allScales, sc...)
		q.report(t.Name, int64((hi-lo)*esz))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	buf := grow8(&q.bytes, 2*len(allScales))
	for i, s := range allScales {
		binary.LittleEndian.PutUint16(buf[2*i:], s)
	}
	return q.w.Write(it.Outputs[1].Name, buf)
}

// shiftError makes block-relative positions in an error tensor-relative.
func shiftError(err error, row0, cols, groups int) error {
	var nf *quant.NonFiniteError
	if errors.As(err, &nf) {
		return quant.InputError(&quant.NonFiniteError{Index: nf.Index + row0*cols, Value: nf.Value})
	}
	var so *quant.ScaleOverflowError
	if errors.As(err, &so) {
		return quant.InputError(&quant.ScaleOverflowError{Row: so.Row + row0, Group: so.Group, AbsMax: so.AbsMax})
	}
	return err
}

// decode converts elements [lo, hi) of raw into q.f32.
func (q *quantizer) decode(raw []byte, dt safetensors.DType, lo, hi int) error {
	esz := dt.Size()
	dst := grow32(&q.f32, hi-lo)
	return checkpoint.DecodeFloat32(dst, raw[lo*esz:hi*esz], dt)
}

// load decodes a block and rejects non-finite values with their index.
func (q *quantizer) load(raw []byte, dt safetensors.DType, lo, hi int) error {
	if err := q.decode(raw, dt, lo, hi); err != nil {
		return err
	}
	for i, v := range q.f32 {
		if !quant.IsFinite(v) {
			return quant.InputError(&quant.NonFiniteError{Index: lo + i, Value: v})
		}
	}
	return nil
}

// encode narrows the block to dt, refusing finite values that overflow it.
func (q *quantizer) encode(dt safetensors.DType, lo int) ([]byte, error) {
	b := grow8(&q.bytes, dt.Size()*len(q.f32))
	return b, encodeAt(b, q.f32, dt, lo)
}

// encodeAt narrows elements [lo, lo+len(src)) of a tensor to dt. The F16
// range is checked here, not left to EncodeFloat32, so that an error gives
// the index in the tensor rather than in the block.
func encodeAt(dst []byte, src []float32, dt safetensors.DType, lo int) error {
	if dt == safetensors.F16 {
		for i, v := range src {
			if math.Abs(float64(v)) >= 65520 && !math.IsInf(float64(v), 0) { // rounds to Inf in binary16
				return quant.InputError(fmt.Errorf("value %g at index %d overflows F16 (max 65504)", v, lo+i))
			}
		}
	}
	if err := checkpoint.EncodeFloat32(dst, src, dt); err != nil {
		return quant.InputError(err)
	}
	return nil
}

func grow32(s *[]float32, n int) []float32 {
	if cap(*s) < n {
		*s = make([]float32, n)
	}
	*s = (*s)[:n]
	return *s
}

func grow16(s *[]uint16, n int) []uint16 {
	if cap(*s) < n {
		*s = make([]uint16, n)
	}
	*s = (*s)[:n]
	return *s
}

func grow8(s *[]byte, n int) []byte {
	if cap(*s) < n {
		*s = make([]byte, n)
	}
	*s = (*s)[:n]
	return *s
}

// WriteJSON writes v as indented JSON to path atomically.
func WriteJSON(path string, v any) error { return safeout.WriteJSON(path, v) }

// createLayout starts an output directory. Refusals (an existing output
// without force, or one mixq did not write) are the user's input; anything
// else, such as a read-only directory, is the environment's.
func createLayout(out string, l *shards.Layout, force bool) (*shards.Writer, error) {
	w, err := shards.CreateLayout(out, l, force)
	if errors.Is(err, shards.ErrExists) {
		err = quant.InputError(err)
	}
	return w, err
}
