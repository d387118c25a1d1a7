package ggufexport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/x448/float16"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/gguf"
	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Sources lists the tensors of an open mixq checkpoint in file order.
func Sources(m *qformat.Model) []Source {
	s := make([]Source, len(m.Entries))
	for i, e := range m.Entries {
		s[i] = Source{Name: e.Name, Record: e.Record}
	}
	return s
}

// SourcesOfPlan lists the tensors a quantization plan will write.
func SourcesOfPlan(p *qformat.Plan) []Source {
	s := make([]Source, len(p.Items))
	for i, it := range p.Items {
		s[i] = Source{Name: it.Input.Name, Record: it.Record}
	}
	return s
}

// flushBytes is how much data is gathered before a write.
const flushBytes = 1 << 20

// Write writes the planned file to out from m, whose tensors must be the
// ones the plan was made from. The caller has checked out (safeout.Check);
// the file appears under its name only when complete. progress, when set,
// is called with the bytes of each finished chunk.
func (x *Export) Write(ctx context.Context, m *qformat.Model, out string, progress func(int64)) error {
	w, err := gguf.Create(out, x.Layout)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	enc := &encoder{w: w, progress: progress}
	for _, t := range x.Tensors {
		if err := ctx.Err(); err != nil {
			return err
		}
		if t.Generated != nil {
			b := make([]byte, 4*len(t.Generated))
			for i, f := range t.Generated {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
			}
			if err := enc.put(b); err != nil {
				return err
			}
			continue
		}
		for _, p := range t.Parts {
			e, found := m.Lookup(p.Name)
			if !found || e.Record.Precision != p.Record.Precision || e.Record.GroupSize != p.Record.GroupSize || !slices.Equal(e.Record.Shape, p.Record.Shape) {
				return fmt.Errorf("tensor %q: the checkpoint does not match the plan", p.Name)
			}
			// The codes are read from the mapping: a file truncated or
			// changed under it faults, and that is an error naming it.
			var err error
			if ferr := fault.Catch(func() { err = enc.tensor(ctx, m, e, t) }); ferr != nil {
				err = quant.InputError(&quant.TensorError{File: e.File(), Tensor: p.Name, Err: ferr})
			}
			if err != nil {
				if te := (*quant.TensorError)(nil); errors.As(err, &te) {
					return err // it names the tensor already
				}
				return &quant.TensorError{Tensor: p.Name, Err: err}
			}
			m.Release(e)
		}
	}
	if err := enc.flush(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	ok = true
	return nil
}

type encoder struct {
	w        *gguf.Writer
	buf      []byte
	progress func(int64)
	codes    []int8
	f32      []float32
}

func (c *encoder) put(b []byte) error {
	c.buf = append(c.buf, b...)
	if len(c.buf) >= flushBytes {
		return c.flush()
	}
	return nil
}

func (c *encoder) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return err
	}
	if c.progress != nil {
		c.progress(int64(len(c.buf)))
	}
	c.buf = c.buf[:0]
	return nil
}

// srcRow is the source row of output row r: the inverse of
// convert_hf_to_gguf.py's permute, which reshapes the rows of each head
// as [2][hd/2] and swaps the axes, so output row h·hd + 2i + j is source
// row h·hd + j·hd/2 + i.
func srcRow(r int64, t *Tensor) int64 {
	if t.Heads == 0 {
		return r
	}
	hd := t.Rows / int64(t.Heads)
	h, rem := r/hd, r%hd
	i, j := rem/2, rem%2
	return h*hd + j*(hd/2) + i
}

// tensor encodes every row of one source entry as t.Type.
func (c *encoder) tensor(ctx context.Context, m *qformat.Model, e *qformat.Entry, t Tensor) error {
	cols := int(t.Cols)
	var packed []byte
	var scales []uint16
	var l quant.Layout
	if e.Layout.Precision.Quantized() {
		var err error
		if packed, scales, err = m.Codes(e); err != nil {
			return err
		}
		l = e.Layout
	}
	if cap(c.codes) < cols {
		c.codes = make([]int8, cols)
		c.f32 = make([]float32, cols)
	}
	codes, f32 := c.codes[:cols], c.f32[:cols]
	rowBytes, err := t.Type.RowBytes(int64(cols))
	if err != nil {
		return err
	}
	out := make([]byte, rowBytes)
	for r := int64(0); r < t.Rows; r++ {
		if r%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		sr := int(srcRow(r, &t))
		switch {
		case packed != nil && (t.Type == gguf.Q8_0 || t.Type == gguf.Q4_0):
			quant.UnpackRow(codes, packed[sr*l.RowBytes():(sr+1)*l.RowBytes()], l.Precision)
			rs := scales[sr*l.GroupsPerRow() : (sr+1)*l.GroupsPerRow()]
			bb := 2 + gguf.QK
			if t.Type == gguf.Q4_0 {
				bb = 2 + gguf.QK/2
			}
			for b := 0; b < cols/gguf.QK; b++ {
				d := rs[b*gguf.QK/l.GroupSize]
				blk := out[b*bb : (b+1)*bb]
				if t.Type == gguf.Q8_0 {
					gguf.PutQ8_0(blk, d, codes[b*gguf.QK:])
				} else {
					gguf.PutQ4_0(blk, d, codes[b*gguf.QK:])
				}
			}
		case t.Type == gguf.F16 || t.Type == gguf.F32:
			if packed != nil {
				quant.UnpackRow(codes, packed[sr*l.RowBytes():(sr+1)*l.RowBytes()], l.Precision)
				rs := scales[sr*l.GroupsPerRow() : (sr+1)*l.GroupsPerRow()]
				for k, q := range codes {
					// ARITHMETIC.md §3: one f32 product, exact.
					f32[k] = float32(q) * float16.Frombits(rs[k/l.GroupSize]).Float32()
				}
			} else if err := e.DecodeRange(f32, sr*cols, (sr+1)*cols); err != nil {
				return err
			}
			dt := safetensors.F32
			if t.Type == gguf.F16 {
				dt = safetensors.F16
			}
			if err := checkpoint.EncodeFloat32(out, f32, dt); err != nil {
				return fmt.Errorf("row %d as %s: %w", sr, t.Type, err)
			}
		default:
			return fmt.Errorf("cannot write %s as %s", e.Record.Precision, t.Type)
		}
		if err := c.put(out); err != nil {
			return err
		}
	}
	return nil
}
