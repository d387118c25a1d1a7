package mixq

import (
	"context"
	"fmt"

	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
)

// Dequantize writes a plain safetensors checkpoint with every tensor of m
// back in floating point (dtype F32, F16 or BF16) under its original name,
// so that any framework can load and evaluate the quantized model.
func Dequantize(ctx context.Context, m *qformat.Model, out string, dtype safetensors.DType, opt Options) error {
	switch dtype {
	case safetensors.F32, safetensors.F16, safetensors.BF16:
	default:
		return quant.InputError(fmt.Errorf("cannot dequantize to %s: want F32, F16 or BF16", dtype))
	}
	if err := checkOutput(m.Checkpoint, out); err != nil {
		return err
	}
	cfg, err := qformat.DequantizedConfig(m.Checkpoint.Config, torchDTypes[dtype])
	if err != nil {
		return err
	}
	specs := make([]safetensors.Spec, len(m.Entries))
	for i, e := range m.Entries {
		specs[i] = safetensors.Spec{Name: e.Name, DType: dtype, Shape: e.Record.Shape}
	}
	shard := opt.MaxShardSize
	if shard == 0 {
		shard = DefaultMaxShardSize
	}
	l, err := shards.Plan(specs, shards.Options{MaxShardSize: shard, Config: cfg, Metadata: map[string]string{"format": "pt"}})
	if err != nil {
		return err
	}
	if l.Extra, err = companions(m.Checkpoint, opt); err != nil {
		return err
	}
	w, err := createLayout(out, l, opt.Force)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	be := opt.backend()
	var f32 []float32
	var buf []byte
	for _, e := range m.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(e.NumElements())
		// Rows per block: whole rows for quantized tensors, any split otherwise.
		cols := 1
		if e.Layout.Cols > 0 {
			cols = e.Layout.Cols
		}
		rowsPer := max(1, blockElems/cols)
		var packed []byte
		var scales []uint16
		if e.Layout.Precision.Quantized() {
			if packed, scales, err = m.Codes(e); err != nil {
				return err
			}
		}
		for lo := 0; lo < n; lo += rowsPer * cols {
			hi := min(n, lo+rowsPer*cols)
			dst := grow32(&f32, hi-lo)
			if packed != nil {
				bl := e.Layout
				r0, r1 := lo/cols, hi/cols
				bl.Rows = r1 - r0
				// The codes are read from the mapping: a file truncated
				// under it faults, and that is an error naming it.
				var err error
				if ferr := fault.Catch(func() {
					err = be.Dequantize(dst, packed[r0*bl.RowBytes():r1*bl.RowBytes()], scales[r0*bl.GroupsPerRow():r1*bl.GroupsPerRow()], bl)
				}); ferr != nil {
					err = quant.InputError(ferr)
				}
				if err != nil {
					return &quant.TensorError{File: e.File(), Tensor: e.Name, Err: err}
				}
			} else if err := e.DecodeRange(dst, lo, hi); err != nil {
				return err // names the file, the tensor and the element
			}
			b := grow8(&buf, (hi-lo)*dtype.Size())
			if err := encodeAt(b, dst, dtype, lo); err != nil {
				return quant.InputError(&quant.TensorError{Tensor: e.Name, Err: err})
			}
			if err := w.Write(e.Name, b); err != nil {
				return err
			}
			if opt.Progress != nil {
				opt.Progress(e.Name, int64(hi-lo)*4)
			}
		}
		m.Release(e)
	}
	if err := w.Close(); err != nil {
		return err
	}
	ok = true
	return nil
}

// torchDTypes are the names transformers gives the dtypes dequantize
// writes, for config.json's torch_dtype.
var torchDTypes = map[safetensors.DType]string{safetensors.F32: "float32", safetensors.F16: "float16", safetensors.BF16: "bfloat16"}
