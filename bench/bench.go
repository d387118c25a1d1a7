package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/gptq"
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
	// VsRTN is, for a GPTQ row, its time over that of absmax round to
	// nearest of the same matrices in the same run.
	VsRTN float64 `json:"vs_rtn,omitempty"`
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

// GPTQOptions configures GPTQLayer. The zero value is one Llama-7B decoder
// layer (hidden 4096, MLP 11008), INT4 g128, 2048 calibration tokens.
type GPTQOptions struct {
	Hidden, MLP int // default 4096 and 11008
	Tokens      int // synthetic calibration tokens per input (default 2048)
	GroupSize   int // default 128
	Workers     int // 0: GOMAXPROCS
	// Progress receives work units as they are done; GPTQWork is the
	// total.
	Progress func(units int64)
	// Notice receives GPTQ's notices (degenerate statistics).
	Notice func(string)
}

func (o GPTQOptions) withDefaults() GPTQOptions {
	if o.Hidden == 0 {
		o.Hidden = 4096
	}
	if o.MLP == 0 {
		o.MLP = 11008
	}
	if o.Tokens == 0 {
		o.Tokens = 2048
	}
	if o.GroupSize == 0 {
		o.GroupSize = quant.DefaultGroupSize
	}
	return o
}

// gptqStage is one distinct input of a Llama decoder layer and the linears
// that read it, in the order the quantizer runs them.
type gptqStage struct {
	input string
	k     int
	names []string
	rows  []int
}

func gptqStages(o GPTQOptions) []gptqStage {
	h, f := o.Hidden, o.MLP
	return []gptqStage{
		{"attention input", h, []string{"q_proj", "k_proj", "v_proj"}, []int{h, h, h}},
		{"o_proj input", h, []string{"o_proj"}, []int{h}},
		{"MLP input", h, []string{"gate_proj", "up_proj"}, []int{f, f}},
		{"down_proj input", f, []string{"down_proj"}, []int{h}},
	}
}

// GPTQWork is the total of the units GPTQLayer reports through Progress:
// the moments (tokens × K(K+1)/2 each), the factorisations and the rows.
func GPTQWork(opt GPTQOptions) int64 {
	o := opt.withDefaults()
	var total int64
	for _, st := range gptqStages(o) {
		total += int64(o.Tokens) * int64(st.k) * int64(st.k+1) / 2
		total += gptq.FactorWork(st.k)
		for _, r := range st.rows {
			total += gptq.RowWork(quant.Layout{Rows: r, Cols: st.k}, true)
		}
	}
	return total
}

// GPTQLayer measures GPTQ on the seven linears of one Llama decoder layer
// (q, k, v, o at K = hidden; gate and up at K = hidden; down at K = MLP),
// INT4, searched scales, as `mixq quantize --rounding gptq` runs it: for
// each distinct input, the second moment of synthetic activations
// (gptq.Moment), then gptq.QuantizeShared (H converted in place, damped
// and factored once, each linear quantized and packed). The anchor, in
// the same run, is absmax round to nearest (quant.QuantizeGroups on the
// CPU backend) of the same matrices, the median of repeated runs; each
// GPTQ figure is one run (minutes at the 7B shape). Weights are heavy-tailed random
// values; activations are correlated, heavy-tailed synthetic ones (see
// synthActivations), not a model's. Like the quantizer, it holds one
// stage's weights and moment at a time. The last row is the process's
// peak resident set size so far (Linux), 0 elsewhere.
func GPTQLayer(ctx context.Context, opt GPTQOptions) ([]Row, error) {
	o := opt.withDefaults()
	be := cpu.New(0)
	prec := fmt.Sprintf("int4 g%d", o.GroupSize)
	var rows []Row
	var gptqSec, rtnSec, momentSec float64
	var wbytes int64
	var notices int
	for si, st := range gptqStages(o) {
		// The moment of this stage's input.
		x := make([]float32, gptq.ChunkTokens*st.k)
		gen := newSynthActivations(st.k, uint64(si+1))
		mo := gptq.NewMoment(st.k)
		var sec float64
		for t := 0; t < o.Tokens; t += gptq.ChunkTokens {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("gptq bench: %w", err)
			}
			n := min(gptq.ChunkTokens, o.Tokens-t)
			gen.fill(x[:n*st.k], n)
			t0 := time.Now()
			err := mo.AddContext(ctx, x[:n*st.k], n, o.Workers)
			sec += time.Since(t0).Seconds()
			if err != nil {
				return nil, err
			}
			if o.Progress != nil {
				o.Progress(int64(n) * int64(st.k) * int64(st.k+1) / 2)
			}
		}
		x = nil
		momentSec += sec
		rows = append(rows, Row{Backend: "cpu", Op: "gptq moment", Shape: fmt.Sprintf("%dx%d", o.Tokens, st.k), Bytes: int64(4 * o.Tokens * st.k),
			Seconds: sec, GBps: float64(4*o.Tokens*st.k) / sec / 1e9, Note: st.input + ", synthetic activations"})
		// The stage's weights, and the anchor on them.
		var ls []gptq.Linear
		var stRTN float64
		var stBytes int64
		for i, name := range st.names {
			l := quant.Layout{Rows: st.rows[i], Cols: st.k, GroupSize: o.GroupSize, Precision: quant.INT4}
			w := make([]float32, l.Elements())
			fillHeavyTailed(w, uint64(100+10*si+i))
			packed, scales := make([]byte, l.PackedBytes()), make([]uint16, l.NumScales())
			var err error
			stRTN += median(200*time.Millisecond, func() {
				if e := quant.QuantizeGroups(be, packed, scales, w, l); e != nil {
					err = e
				}
			})
			if err != nil {
				return nil, err
			}
			stBytes += int64(4 * len(w))
			ls = append(ls, gptq.Linear{Name: name, W: w, Layout: l})
		}
		shape := fmt.Sprintf("%dx%d", st.rows[0], st.k)
		if len(ls) > 1 {
			shape = fmt.Sprintf("%d×%s", len(ls), shape)
		}
		names := strings.Join(st.names, ",")
		t0 := time.Now()
		err := gptq.QuantizeShared(ctx, mo, ls, gptq.Options{Search: true, Workers: o.Workers, Progress: o.Progress},
			func(s string) {
				notices++
				if o.Notice != nil {
					o.Notice(s)
				}
			},
			func(*gptq.Rounded, gptq.Linear) error { return nil })
		if err != nil {
			return nil, err
		}
		sec = time.Since(t0).Seconds()
		mo, ls = nil, nil
		// What the next stage allocates must not come on top of this
		// stage's garbage (the moment alone is 16·K(K+1)/2 bytes).
		debug.FreeOSMemory()
		gptqSec += sec
		rtnSec += stRTN
		wbytes += stBytes
		rows = append(rows,
			Row{Backend: "cpu", Op: "gptq " + names, Shape: shape, Precision: prec, Bytes: stBytes, Seconds: sec, GBps: float64(stBytes) / sec / 1e9,
				VsRTN: sec / stRTN, Note: "factor once, then each linear"},
			Row{Backend: "cpu", Op: "rtn " + names, Shape: shape, Precision: prec, Bytes: stBytes, Seconds: stRTN, GBps: float64(stBytes) / stRTN / 1e9, VsRTN: 1,
				Note: "anchor: absmax round to nearest, same matrices"})
	}
	layer := fmt.Sprintf("layer h%d f%d", o.Hidden, o.MLP)
	rows = append(rows,
		Row{Backend: "cpu", Op: "gptq layer", Shape: layer, Precision: prec, Bytes: wbytes, Seconds: gptqSec, GBps: float64(wbytes) / gptqSec / 1e9,
			VsRTN: gptqSec / rtnSec, Note: fmt.Sprintf("7 linears, searched scales; %d notices", notices)},
		Row{Backend: "cpu", Op: "gptq layer + moments", Shape: layer, Precision: prec, Bytes: wbytes, Seconds: gptqSec + momentSec,
			GBps: float64(wbytes) / (gptqSec + momentSec) / 1e9, VsRTN: (gptqSec + momentSec) / rtnSec,
			Note: fmt.Sprintf("with the second moments of %d synthetic tokens per input", o.Tokens)},
		Row{Backend: "cpu", Op: "rtn layer", Shape: layer, Precision: prec, Bytes: wbytes, Seconds: rtnSec, GBps: float64(wbytes) / rtnSec / 1e9, VsRTN: 1,
			Note: "anchor: absmax round to nearest, same matrices"})
	peak := peakRSS()
	rows = append(rows, Row{Backend: "host", Op: "peak rss", Shape: layer, Bytes: peak, Note: fmt.Sprintf("%d MiB (VmHWM of this process so far)", peak>>20)})
	return rows, nil
}

// peakRSS is the process's peak resident set size (VmHWM) in bytes, or 0
// where /proc/self/status does not say.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// synthActivations makes activation rows with what GPTQ has to work with
// in a real layer: channels correlated through a rank-32 mix of
// heavy-tailed sources, independent noise, and every 61st channel 8×
// larger (the outlier channels of transformer activations).
type synthActivations struct {
	k   int
	mix []float32 // 32 × k
	rng *rand.Rand
	z   [32]float32
}

func newSynthActivations(k int, seed uint64) *synthActivations {
	s := &synthActivations{k: k, mix: make([]float32, 32*k), rng: rand.New(rand.NewPCG(seed, 0x6d69787102))}
	fillHeavyTailed(s.mix, seed)
	for i := range s.mix {
		s.mix[i] *= 10 // fillHeavyTailed's scale is 0.02: sources of order 1
	}
	return s
}

// fill writes n rows of k channels into x.
func (s *synthActivations) fill(x []float32, n int) {
	k := s.k
	for t := range n {
		for i := range s.z {
			c := (s.rng.ExpFloat64() + s.rng.ExpFloat64()) / 2
			s.z[i] = float32(s.rng.NormFloat64() / math.Sqrt(c))
		}
		row := x[t*k : (t+1)*k]
		for c := range row {
			row[c] = float32(0.3 * s.rng.NormFloat64())
		}
		for i, z := range s.z {
			m := s.mix[i*k : (i+1)*k][:len(row)]
			for c, v := range m {
				row[c] += z * v
			}
		}
		for c := 0; c < k; c += 61 {
			row[c] *= 8
		}
	}
}
