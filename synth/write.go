package synth

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"

	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
	"github.com/x448/float16"
)

// GeneratorVersion identifies the generator of this package; it is stored
// in the checkpoint metadata and changes whenever the values for a given
// (seed, name, index) change.
const GeneratorVersion = 1

// chunkElems is the number of elements Write generates and hands to the
// shard writer at once: 2 MiB of F32 scratch per worker.
const chunkElems = 1 << 19

// Options configures Write.
type Options struct {
	Preset Preset
	Seed   uint64
	// DType is the stored element type: F32, F16 or BF16 (the default).
	DType safetensors.DType
	// MaxShardSize is the most tensor bytes per shard file; 0 means one file.
	MaxShardSize int64
	// Replace allows dir to exist; it is replaced once the new checkpoint
	// is complete.
	Replace bool
	// Progress, when not nil, is called with the number of tensor data bytes
	// written since its previous call, from the goroutine that called Write,
	// after every chunk. The deltas add up to the total tensor data size.
	Progress func(deltaBytes int64)
}

// Write creates the checkpoint directory dir, which must not exist: the
// tensors of opt.Preset.Specs in order, their values from FillTensor under
// opt.Seed rounded to nearest even in opt.DType, config.json from
// opt.Preset.Config, and metadata naming the preset, layer count, seed and
// generator version. The directory appears only when complete (package
// shards writes it under a temporary name).
//
// Tensors are generated in chunks of 512 Ki elements on GOMAXPROCS
// goroutines and written in order, so memory stays bounded by a few chunks
// per goroutine whatever the size of the model. The bytes depend only on
// the options, not on GOMAXPROCS.
func Write(dir string, opt Options) error { return WriteContext(context.Background(), dir, opt) }

// WriteContext is Write that stops when ctx is done (checked after every
// chunk, so within milliseconds), removing what it wrote, and returns
// ctx's error.
func WriteContext(ctx context.Context, dir string, opt Options) error {
	dtype, err := checkDType(opt.DType)
	if err != nil {
		return err
	}
	p := opt.Preset
	cfg, err := p.Config(dtype)
	if err != nil {
		return err
	}
	specs := p.Specs(dtype)
	l, err := shards.Plan(specs, shards.Options{
		MaxShardSize: opt.MaxShardSize,
		Config:       cfg,
		Metadata: map[string]string{
			"format":                 "pt",
			"mixq.synth.preset":      p.Name,
			"mixq.synth.layers":      strconv.Itoa(p.Layers),
			"mixq.synth.seed":        strconv.FormatUint(opt.Seed, 10),
			"mixq.synth.generator":   strconv.Itoa(GeneratorVersion),
			"mixq.synth.description": p.Description,
		},
	})
	if err != nil {
		return err
	}
	w, err := shards.CreateLayout(dir, l, opt.Replace)
	if err != nil {
		return err
	}
	if err := stream(ctx, w, specs, opt.Seed, opt.Progress); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// block is the number of elements a worker generates and encodes at a
// time, so that the float32 values are still in cache when encoded.
const block = 1 << 14

// chunk is elements [off, off+n) of one tensor, encoded into buf.
type chunk struct {
	spec *safetensors.Spec
	gen  *tensorGen
	off  int64
	n    int
	buf  []byte
	done chan struct{}
}

// tensorWriter is the part of *shards.Writer that stream uses.
type tensorWriter interface {
	Write(name string, data []byte) error
}

// stream generates every tensor of specs on GOMAXPROCS workers and writes
// the chunks to w in order. At most 2·GOMAXPROCS chunks are in flight. On
// the first error it stops every goroutine it started and returns it.
func stream(ctx context.Context, w tensorWriter, specs []safetensors.Spec, seed uint64, progress func(int64)) error {
	workers := runtime.GOMAXPROCS(0)
	window := 2 * workers
	free := make(chan []byte, window) // buffers, allocated on first use
	for range window {
		free <- nil
	}
	work := make(chan *chunk)
	order := make(chan *chunk, window)
	quit := make(chan struct{})
	var wg sync.WaitGroup

	wg.Go(func() { // producer: cuts the tensors into chunks, in order
		defer close(work)
		defer close(order)
		for i := range specs {
			s := &specs[i]
			gen := newTensorGen(*s, seed)
			size := int64(s.DType.Size())
			for n, off := numel(s), int64(0); off < n; off += chunkElems {
				var buf []byte
				select {
				case buf = <-free:
				case <-quit:
					return
				}
				c := &chunk{spec: s, gen: gen, off: off, n: int(min(n-off, chunkElems)), done: make(chan struct{})}
				if need := int64(c.n) * size; int64(cap(buf)) < need {
					buf = make([]byte, need)
				}
				c.buf = buf[:int64(c.n)*size]
				order <- c // never blocks: each chunk in flight holds one of window buffers
				select {
				case work <- c:
				case <-quit:
					return
				}
			}
		}
	})
	for range workers {
		wg.Go(func() {
			scratch := make([]float32, block)
			for c := range work {
				size := c.spec.DType.Size()
				for lo := 0; lo < c.n; lo += block {
					hi := min(lo+block, c.n)
					f := scratch[:hi-lo]
					c.gen.fill(f, c.off+int64(lo))
					encode(c.buf[lo*size:hi*size], f, c.spec.DType)
				}
				close(c.done)
			}
		})
	}

	var err error
	for c := range order {
		<-c.done
		if err = ctx.Err(); err != nil {
			break
		}
		if err = w.Write(c.spec.Name, c.buf); err != nil {
			break
		}
		if progress != nil {
			progress(int64(len(c.buf)))
		}
		free <- c.buf
	}
	close(quit)
	wg.Wait()
	return err
}

// numel is the number of elements of s.
func numel(s *safetensors.Spec) int64 {
	n := int64(1)
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// encode stores src little-endian in dtype (F32, F16 or BF16, rounded to
// nearest even) into dst, which holds exactly len(src) elements.
func encode(dst []byte, src []float32, dtype safetensors.DType) {
	switch dtype {
	case safetensors.F32:
		for i, x := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(x))
		}
	case safetensors.F16:
		for i, x := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], float16.Fromfloat32(x).Bits())
		}
	case safetensors.BF16:
		for i, x := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], bfloat16(x))
		}
	default:
		panic(fmt.Sprintf("synth: encode to %q", dtype))
	}
}

// bfloat16 rounds x to the nearest bfloat16, ties to even, and returns its
// bits. x must not be NaN (a NaN payload could round to infinity); values
// beyond the largest bfloat16 round to infinity, as IEEE rounding does.
func bfloat16(x float32) uint16 {
	b := math.Float32bits(x)
	b += 0x7FFF + (b>>16)&1
	return uint16(b >> 16)
}
