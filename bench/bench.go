package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/model"
	"github.com/mixq/mixq/quant"
)

// Row is one measurement.
type Row struct {
	Backend   string  `json:"backend"`
	Op        string  `json:"op"`
	Shape     string  `json:"shape"`
	Precision string  `json:"precision,omitempty"`
	Bytes     int64   `json:"bytes"` // bytes the op must move, counted once
	Seconds   float64 `json:"seconds"`
	GBps      float64 `json:"gb_per_s"`
	// VsCopy is GBps over the memcpy baseline of the same backend and run.
	VsCopy float64 `json:"vs_copy,omitempty"`
	// TokensPerSec is set for forward-pass (eval) rows instead of bytes.
	TokensPerSec float64 `json:"tokens_per_sec,omitempty"`
	// FloorSeconds is Bytes over the copy bandwidth (GPU rows).
	FloorSeconds float64 `json:"floor_seconds,omitempty"`
	// Speedup is a baseline's time over this row's (GPU GEMV vs cuBLAS SGEMV).
	Speedup float64 `json:"speedup,omitempty"`
	// VsF32 is, for a CPU matmul row, the time of the plain-Go binary32
	// matmul of the same shape and m (the forward pass's, measured in the
	// same run) over this row's.
	VsF32 float64 `json:"vs_f32,omitempty"`
	Note  string  `json:"note,omitempty"`
}

// GPURows converts the GPU plugin's measurements of one device to rows.
func GPURows(device string, in []gpu.BenchRow) []Row {
	rows := make([]Row, 0, len(in))
	for _, r := range in {
		rows = append(rows, Row{
			Backend: device, Op: r.Op, Shape: r.Shape, Precision: r.Precision, Bytes: r.Bytes,
			Seconds: r.Seconds, GBps: r.GBps, VsCopy: r.VsCopy, FloorSeconds: r.FloorSeconds,
			Speedup: r.Speedup, Note: r.Note,
		})
	}
	return rows
}

// Options selects the work.
type Options struct {
	Quick    bool
	Backends []quant.Backend
	// Budget is the time spent per measurement (default 1s, 0.2s quick).
	Budget time.Duration
	// Shapes overrides the default shapes.
	Shapes []Shape
	// MatMulOnly measures only the memcpy baseline, the F32 anchor and the
	// quantized matmuls.
	MatMulOnly bool
	// Batches are the numbers of rows of x of the matmul rows (default 1
	// and 16; 1 quick).
	Batches []int
}

// Shape is a weight matrix shape.
type Shape struct{ Rows, Cols int }

func (s Shape) String() string { return fmt.Sprintf("%dx%d", s.Rows, s.Cols) }

// Shapes returns the benchmark shapes: a 7B attention projection and a
// 7B MLP projection.
func Shapes(quick bool) []Shape {
	if quick {
		return []Shape{{4096, 4096}}
	}
	return []Shape{{4096, 4096}, {11008, 4096}}
}

// Run measures every op on every backend.
func Run(opt Options) ([]Row, error) {
	budget := opt.Budget
	if budget == 0 {
		budget = time.Second
		if opt.Quick {
			budget = 200 * time.Millisecond
		}
	}
	var rows []Row
	shapes := opt.Shapes
	if shapes == nil {
		shapes = Shapes(opt.Quick)
	}
	for _, sh := range shapes {
		n := sh.Rows * sh.Cols
		w := make([]float32, n)
		fillHeavyTailed(w, 1)
		src := make([]float32, n)
		dst := make([]float32, n)
		copy(src, w)
		copyBytes := int64(8 * n) // read + write
		copySec := median(budget, func() { copy(dst, src) })
		base := float64(copyBytes) / copySec / 1e9
		rows = append(rows, Row{Backend: "host", Op: "memcpy", Shape: sh.String(), Bytes: copyBytes, Seconds: copySec, GBps: base, VsCopy: 1})
		f32, fr := f32Rows(sh, w, budget, base, opt.Quick, opt.Batches)
		rows = append(rows, fr...)
		for _, be := range opt.Backends {
			r, err := runBackend(be, sh, w, budget, base, opt, f32)
			if err != nil {
				return nil, fmt.Errorf("%s %v: %w", be.Name(), sh, err)
			}
			rows = append(rows, r...)
		}
	}
	return rows, nil
}

// kernelNamer is a backend that names its matmul kernels (cpu.Backend).
type kernelNamer interface {
	MatMulKernels() string
	Threads() int
}

// matmulMs are the numbers of rows of x of the matmul rows: one token
// (decode, GEMV) and a batch of 16 (prefill, GEMM).
func matmulMs(quick bool, batches []int) []int {
	if len(batches) > 0 {
		return batches
	}
	if quick {
		return []int{1}
	}
	return []int{1, 16}
}

// f32Rows measures the anchor of the matmul rows: the forward pass's
// plain-Go binary32 matmul (model.MatMulF32) of the same shape, for each m.
func f32Rows(sh Shape, w []float32, budget time.Duration, base float64, quick bool, batches []int) (map[int]float64, []Row) {
	secs := map[int]float64{}
	var rows []Row
	for _, m := range matmulMs(quick, batches) {
		x := make([]float32, m*sh.Cols)
		fillHeavyTailed(x, 2)
		y := make([]float32, m*sh.Rows)
		sec := median(budget, func() { model.MatMulF32(y, x, w, m, sh.Rows, sh.Cols) })
		bytes := int64(4*len(w) + 4*len(x) + 4*len(y))
		gb := float64(bytes) / sec / 1e9
		secs[m] = sec
		rows = append(rows, Row{Backend: "host", Op: fmt.Sprintf("matmul m=%d", m), Shape: sh.String(), Precision: "f32",
			Bytes: bytes, Seconds: sec, GBps: gb, VsCopy: gb / base, VsF32: 1, Note: "plain Go (the forward pass's F32 matmul)"})
	}
	return secs, rows
}

func runBackend(be quant.Backend, sh Shape, w []float32, budget time.Duration, base float64, opt Options, f32 map[int]float64) ([]Row, error) {
	matmulOnly := opt.MatMulOnly
	var rows []Row
	add := func(op string, p quant.Precision, bytes int64, sec float64) {
		gb := float64(bytes) / sec / 1e9
		prec := ""
		if p != 0 {
			prec = p.String()
		}
		rows = append(rows, Row{Backend: be.Name(), Op: op, Shape: sh.String(), Precision: prec, Bytes: bytes, Seconds: sec, GBps: gb, VsCopy: gb / base})
	}
	n := sh.Rows * sh.Cols
	deq := make([]float32, n)
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		l := quant.Layout{Rows: sh.Rows, Cols: sh.Cols, GroupSize: quant.DefaultGroupSize, Precision: p}
		scales := make([]uint16, l.NumScales())
		packed := make([]byte, l.PackedBytes())
		qBytes := int64(l.PackedBytes() + 2*l.NumScales())
		var err error
		sec := median(budget, func() {
			if e := quant.QuantizeGroups(be, packed, scales, w, l); e != nil {
				err = e
			}
		})
		if err != nil {
			return nil, err
		}
		if !matmulOnly {
			// Quantize reads the floats and writes codes and scales, in one
			// pass when the backend can (as the pipeline does).
			add("quantize", p, int64(4*n)+qBytes, sec)
			sec = median(budget, func() {
				if e := be.Dequantize(deq, packed, scales, l); e != nil {
					err = e
				}
			})
			add("dequantize", p, qBytes+int64(4*n), sec)
		}
		for _, m := range matmulMs(opt.Quick, opt.Batches) {
			x := make([]float32, m*sh.Cols)
			fillHeavyTailed(x, 2)
			y := make([]float32, m*sh.Rows)
			sec = median(budget, func() {
				if e := be.MatMul(y, x, m, packed, scales, l); e != nil {
					err = e
				}
			})
			add(fmt.Sprintf("matmul m=%d", m), p, qBytes+int64(4*len(x)+4*len(y)), sec)
			r := &rows[len(rows)-1]
			if f, ok := f32[m]; ok {
				r.VsF32 = f / sec
			}
			if k, ok := be.(kernelNamer); ok {
				r.Note = fmt.Sprintf("%s kernels, %d threads", k.MatMulKernels(), k.Threads())
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if matmulOnly {
		return rows, nil
	}
	// Activation statistics over as many tokens as the matrix has rows.
	st := quant.NewStats(sh.Cols)
	var err error
	sec := median(budget, func() {
		st.Count = 0
		if e := be.ChannelStats(st, w, sh.Rows); e != nil {
			err = e
		}
	})
	if err != nil {
		return nil, err
	}
	add("channel-stats", 0, int64(4*n), sec)
	return rows, nil
}

// median runs f once to warm up, then repeatedly until the budget is
// spent (at least 3 runs), and returns the median duration in seconds.
func median(budget time.Duration, f func()) float64 {
	f()
	var ts []float64
	start := time.Now()
	for len(ts) < 3 || time.Since(start) < budget {
		t0 := time.Now()
		f()
		ts = append(ts, time.Since(t0).Seconds())
		if len(ts) >= 1000 {
			break
		}
	}
	slices.Sort(ts)
	return ts[len(ts)/2]
}

// fillHeavyTailed fills w with Student-t(4)-like values and rare outliers.
func fillHeavyTailed(w []float32, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x6d69787101))
	for i := range w {
		z := r.NormFloat64()
		// A normal over the root of a scaled chi-square with 4 degrees of
		// freedom is Student-t(4).
		c := (r.ExpFloat64() + r.ExpFloat64()) / 2
		v := 0.02 * z / math.Sqrt(c)
		if r.IntN(10000) == 0 {
			v *= 20
		}
		w[i] = float32(v)
	}
}
