//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"gorgonia.org/cu"

	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/kernels"
	"github.com/mixq/mixq/quant"
)

// benchShape is a weight matrix [N][K] of the benchmarks.
type benchShape struct{ N, K int }

func (s benchShape) String() string { return fmt.Sprintf("%dx%d", s.N, s.K) }

// Bench measures the kernels on device-resident data with events, next to
// the device-to-device copy bandwidth of the same run and an FP32 cuBLAS
// SGEMV, and end-to-end quantization from host memory (uploads included)
// next to the host-to-device copy. Every time is the median of Iters
// repetitions after a warm-up launch.
func Bench(o gpu.BenchOptions) (rows []gpu.BenchRow, err error) {
	d, err := Open(o.Ordinal)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := d.Close(); err == nil {
			err = cerr
		}
	}()
	if o.Iters <= 0 {
		o.Iters = 20
	}
	shapes := []benchShape{{8192, 8192}, {28672, 8192}}
	copyBytes := 1 << 30
	if o.Quick {
		shapes, copyBytes, o.Iters = shapes[:1], 256<<20, max(5, o.Iters/4)
	}
	b := &bencher{d: d, iters: o.Iters}
	defer b.free()

	// The reference bandwidth: a device-to-device copy, bytes read + written.
	src, err := b.alloc(copyBytes)
	if err != nil {
		return nil, err
	}
	dst, err := b.alloc(copyBytes)
	if err != nil {
		return nil, err
	}
	t, err := b.time(0, func() error {
		d.ctx.MemcpyDtoDAsync(cu.DevicePtr(dst), cu.DevicePtr(src), int64(copyBytes), d.streams[0])
		return d.after("cuMemcpyDtoDAsync")
	})
	if err != nil {
		return nil, err
	}
	copyBW := 2 * float64(copyBytes) / t
	rows = append(rows, gpu.BenchRow{Op: "copy d2d", Shape: fmt.Sprintf("%d MiB", copyBytes>>20), Bytes: 2 * int64(copyBytes), Seconds: t, GBps: copyBW / 1e9, VsCopy: 1})
	row := func(op string, p quant.Precision, sh benchShape, bytes int64, t float64) gpu.BenchRow {
		bw := float64(bytes) / t
		r := gpu.BenchRow{Op: op, Shape: sh.String(), Bytes: bytes, Seconds: t, GBps: bw / 1e9, VsCopy: bw / copyBW, FloorSeconds: float64(bytes) / copyBW}
		if p != 0 {
			r.Precision = p.String()
		}
		return r
	}

	sg, sgErr := openSGEMV(d)
	if sg != nil {
		defer sg.close()
	}
	for _, sh := range shapes {
		host := randomWeights(sh.N * sh.K)
		w, err := b.upload(host)
		if err != nil {
			return nil, err
		}
		x, err := b.upload(randomWeights(64 * sh.K))
		if err != nil {
			return nil, err
		}
		y, err := b.alloc(4 * 64 * sh.N)
		if err != nil {
			return nil, err
		}
		sgemv := 0.0
		if sg != nil {
			sgemv, err = b.time(-1, func() error { return sg.run(w, x, y, sh.N, sh.K) })
			if err != nil {
				return nil, err
			}
			rows = append(rows, row("sgemv cublas fp32", 0, sh, int64(4*sh.N*sh.K), sgemv))
		} else {
			rows = append(rows, gpu.BenchRow{Op: "sgemv cublas fp32", Shape: sh.String(), Note: sgErr.Error()})
		}
		for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
			l := quant.Layout{Rows: sh.N, Cols: sh.K, GroupSize: quant.DefaultGroupSize, Precision: p}
			packed, err := b.alloc(l.PackedBytes())
			if err != nil {
				return nil, err
			}
			scales, err := b.alloc(2 * l.NumScales())
			if err != nil {
				return nil, err
			}
			errs, err := b.alloc(16)
			if err != nil {
				return nil, err
			}
			deq, err := b.alloc(4 * l.Elements())
			if err != nil {
				return nil, err
			}
			qbytes := int64(l.PackedBytes() + 2*l.NumScales())
			fbytes := int64(4 * l.Elements())
			t, err := b.time(0, func() error { return gpu.LaunchQuantizeGroups(d, 0, w, packed, scales, errs, l, 0) })
			if err != nil {
				return nil, err
			}
			rows = append(rows, row("quantize", p, sh, fbytes+qbytes, t))
			t, err = b.time(0, func() error { return gpu.LaunchDequantize(d, 0, packed, scales, deq, l) })
			if err != nil {
				return nil, err
			}
			rows = append(rows, row("dequantize", p, sh, fbytes+qbytes, t))
			for _, m := range []int{1, 2, 8, 64} {
				plan := gpu.PlanMatMul(m, l)
				variants := []string{plan.Kernel}
				if plan.Kernel == kernels.GEMVStaged {
					variants = append(variants, kernels.GEMV) // x through L1, for comparison
				}
				for _, k := range variants {
					plan.Kernel = k
					t, err := b.time(0, func() error { return plan.Launch(d, 0, x, m, packed, scales, l, y) })
					if err != nil {
						return nil, err
					}
					op := fmt.Sprintf("%s m=%d", strings.TrimPrefix(k, "mixq_"), m)
					r := row(op, p, sh, qbytes, t) // the weight bytes: x and y are small and cached
					if m == 1 && sgemv > 0 {
						r.Speedup = sgemv / t
					}
					rows = append(rows, r)
				}
			}
			// End to end from host memory: uploads, kernels and downloads
			// through the backend's two-stream pipeline.
			be := gpu.New(d, gpu.Options{})
			hp := make([]byte, l.PackedBytes())
			hs := make([]uint16, l.NumScales())
			start := time.Now()
			if err := be.QuantizeGroups(hp, hs, host, l); err != nil {
				return nil, err
			}
			e2e := time.Since(start).Seconds()
			start = time.Now()
			if err := be.QuantizeGroups(hp, hs, host, l); err != nil {
				return nil, err
			}
			e2e = min(e2e, time.Since(start).Seconds())
			if err := be.FreeBuffers(); err != nil {
				return nil, err
			}
			r := row("quantize e2e (host)", p, sh, fbytes+qbytes, e2e)
			r.VsCopy, r.FloorSeconds = 0, 0
			r.Note = "includes host-to-device upload; compare with copy h2d"
			rows = append(rows, r)
		}
		// Host-to-device copy of the same FP32 weights: the e2e ceiling.
		start := time.Now()
		if err := d.Upload(w, gpu.BytesOf(host), 0); err != nil {
			return nil, err
		}
		if err := d.Sync(0); err != nil {
			return nil, err
		}
		h2d := time.Since(start).Seconds()
		rows = append(rows, gpu.BenchRow{Op: "copy h2d (pageable)", Shape: sh.String(), Bytes: int64(4 * len(host)), Seconds: h2d, GBps: float64(4*len(host)) / h2d / 1e9})
		b.free()
	}
	return rows, nil
}

type bencher struct {
	d      *Device
	iters  int
	allocs []gpu.Ptr
}

func (b *bencher) alloc(n int) (gpu.Ptr, error) {
	p, err := b.d.Alloc(n)
	if err == nil {
		b.allocs = append(b.allocs, p)
	}
	return p, err
}

func (b *bencher) upload(host []float32) (gpu.Ptr, error) {
	p, err := b.alloc(4 * len(host))
	if err != nil {
		return 0, err
	}
	if err := b.d.Upload(p, gpu.BytesOf(host), 0); err != nil {
		return 0, err
	}
	return p, b.d.Sync(0)
}

func (b *bencher) free() {
	for _, p := range b.allocs {
		_ = b.d.Free(p)
	}
	b.allocs = nil
}

// time returns the median over b.iters of the event-timed run of fn on
// stream s (-1: the legacy default stream, where cuBLAS runs), after one
// untimed warm-up.
func (b *bencher) time(s int, fn func() error) (float64, error) {
	ctx := b.d.ctx
	stream := cu.Stream{}
	if s >= 0 {
		stream = b.d.streams[s]
	}
	start, err := ctx.MakeEvent(cu.DefaultEvent)
	if err != nil {
		return 0, err
	}
	defer ctx.DestroyEvent(&start)
	stop, err := ctx.MakeEvent(cu.DefaultEvent)
	if err != nil {
		return 0, err
	}
	defer ctx.DestroyEvent(&stop)
	if err := fn(); err != nil { // warm-up: module load and JIT stay out of the numbers
		return 0, err
	}
	var ts []float64
	for range b.iters {
		ctx.Record(start, stream)
		if err := b.d.after("cuEventRecord"); err != nil {
			return 0, err
		}
		if err := fn(); err != nil {
			return 0, err
		}
		ctx.Record(stop, stream)
		if err := b.d.after("cuEventRecord"); err != nil {
			return 0, err
		}
		ctx.SynchronizeEvent(stop)
		if err := b.d.after("cuEventSynchronize"); err != nil {
			return 0, err
		}
		ms, err := ctx.Elapsed(start, stop)
		if err != nil {
			return 0, err
		}
		ts = append(ts, ms/1e3)
	}
	slices.Sort(ts)
	return ts[len(ts)/2], nil
}

func randomWeights(n int) []float32 {
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.02)
	}
	return w
}
