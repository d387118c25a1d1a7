// Command gen writes cases.bin for the CUDA contract check
// (scripts/contract-check/README.md): every golden vector of testdata/golden
// plus larger random cases, each with the exact outputs of the pure-Go
// reference backend (package cpu).
//
//	go run ./scripts/contract-check/gen -o DIR
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/quant/quanttest"
)

// Record kinds (README.md, "File format").
const (
	kindGroupScales      = 1
	kindGroupScalesError = 2
	kindQuantize         = 3
	kindDequantize       = 4
	kindMatMul           = 5
	kindChannelStats     = 6
)

// Buffer element types.
const (
	dtF32 = 1
	dtF64 = 2
	dtF16 = 3 // binary16 bit patterns, 2 bytes
	dtU8  = 4 // raw bytes: INT8 codes or packed INT4 rows
	dtI64 = 5
)

// Error status of a GroupScales run, as stored in the 4 × i64 status buffer.
const (
	statusOK        = 0
	statusNonFinite = 1 // {1, flat index, 0, value bits}
	statusOverflow  = 2 // {2, row, group, absmax bits}
)

const magic = "MIXQCCK1"
const version = 1

type buffer struct {
	dtype uint32
	data  []byte
}

// ref names a byte range of a pooled buffer.
type ref struct {
	id     uint32
	off, n uint64
}

// view is the byte range [off, off+n) of r.
func (r ref) view(off, n uint64) ref {
	if off+n > r.n {
		panic(fmt.Sprintf("view [%d, %d) outside a buffer of %d bytes", off, off+n, r.n))
	}
	return ref{id: r.id, off: r.off + off, n: n}
}

type record struct {
	kind    uint32
	name    string
	dims    []int64
	in, out []ref
}

type file struct {
	bufs []buffer
	recs []record
	seen map[string]bool
	// coverage counters, printed at the end
	cover map[string]int
	sum   hash.Hash // SHA-256 of the file written
}

func (f *file) add(dtype uint32, data []byte) ref {
	f.bufs = append(f.bufs, buffer{dtype, data})
	return ref{id: uint32(len(f.bufs) - 1), n: uint64(len(data))}
}

func (f *file) rec(kind uint32, name string, dims []int64, in, out []ref) {
	if f.seen[name] {
		fatalf("duplicate case name %q", name)
	}
	f.seen[name] = true
	f.recs = append(f.recs, record{kind, name, dims, in, out})
}

func (f *file) f32(v []float32) ref { return f.add(dtF32, f32Bytes(v)) }
func (f *file) f64(v []float64) ref { return f.add(dtF64, f64Bytes(v)) }
func (f *file) f16(v []uint16) ref  { return f.add(dtF16, u16Bytes(v)) }
func (f *file) u8(v []byte) ref     { return f.add(dtU8, v) }
func (f *file) i64(v ...int64) ref  { return f.add(dtI64, i64Bytes(v)) }
func layoutDims(l quant.Layout) []int64 {
	return []int64{int64(l.Rows), int64(l.Cols), int64(l.GroupSize), int64(l.Precision.Bits())}
}

func (f *file) write(path string) (int64, error) {
	fh, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(io.MultiWriter(fh, f.sum), 1<<20)
	le := binary.LittleEndian
	put32 := func(v uint32) { w.Write(le.AppendUint32(nil, v)) }
	put64 := func(v uint64) { w.Write(le.AppendUint64(nil, v)) }
	w.WriteString(magic)
	put32(version)
	put32(uint32(len(f.bufs)))
	put32(uint32(len(f.recs)))
	put32(0)
	for _, b := range f.bufs {
		put32(b.dtype)
		put32(0)
		put64(uint64(len(b.data)))
		w.Write(b.data)
	}
	putRef := func(r ref) {
		put32(r.id)
		put32(0)
		put64(r.off)
		put64(r.n)
	}
	for _, r := range f.recs {
		put32(r.kind)
		put32(uint32(len(r.name)))
		w.WriteString(r.name)
		put32(uint32(len(r.dims)))
		for _, d := range r.dims {
			put64(uint64(d))
		}
		put32(uint32(len(r.in)))
		for _, x := range r.in {
			putRef(x)
		}
		put32(uint32(len(r.out)))
		for _, x := range r.out {
			putRef(x)
		}
	}
	if err := w.Flush(); err != nil {
		fh.Close()
		return 0, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return 0, err
	}
	return st.Size(), fh.Close()
}

// Little-endian encodings.

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f64Bytes(v []float64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return b
}

func u16Bytes(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

func i64Bytes(v []int64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "contract-check gen: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

var refb = cpu.New(0)

// statusOf turns a GroupScales error into the 4 × i64 status.
func statusOf(err error) []int64 {
	var nf *quant.NonFiniteError
	var ov *quant.ScaleOverflowError
	switch {
	case err == nil:
		return []int64{statusOK, 0, 0, 0}
	case errors.As(err, &nf):
		return []int64{statusNonFinite, int64(nf.Index), 0, int64(math.Float32bits(nf.Value))}
	case errors.As(err, &ov):
		return []int64{statusOverflow, int64(ov.Row), int64(ov.Group), int64(math.Float32bits(ov.AbsMax))}
	}
	fatalf("unexpected GroupScales error: %v", err)
	return nil
}

// quantizeSet adds the GroupScales, Quantize and Dequantize records of w
// under layout l, all expected outputs computed by the reference backend.
// wr is w's pooled buffer (shared between precisions). dqRows > 0 limits the
// Dequantize record to the first dqRows rows (a view of the same buffers).
func (f *file) quantizeSet(name string, w []float32, wr ref, l quant.Layout, dqRows int) (scales []uint16, packed []byte, sr, pr ref) {
	check(l.Validate())
	scales = make([]uint16, l.NumScales())
	check(refb.GroupScales(scales, w, l))
	packed = make([]byte, l.PackedBytes())
	check(refb.Quantize(packed, w, scales, l))
	f.coverage(w, scales, l)
	sr, pr = f.f16(scales), f.u8(packed)
	dims := layoutDims(l)
	f.rec(kindGroupScales, name+"/groupscales", dims, []ref{wr}, []ref{sr, f.i64(statusOf(nil)...)})
	f.rec(kindQuantize, name+"/quantize", dims, []ref{wr, sr}, []ref{pr})
	dl := l
	if dqRows > 0 && dqRows < l.Rows {
		dl.Rows = dqRows
	}
	deq := make([]float32, dl.Elements())
	check(refb.Dequantize(deq, packed[:dl.PackedBytes()], scales[:dl.NumScales()], dl))
	dname := name + "/dequantize"
	if dl.Rows != l.Rows {
		dname = fmt.Sprintf("%s/dequantize[rows 0:%d]", name, dl.Rows)
	}
	f.rec(kindDequantize, dname, layoutDims(dl),
		[]ref{pr.view(0, uint64(dl.PackedBytes())), sr.view(0, uint64(2*dl.NumScales()))},
		[]ref{f.f32(deq)})
	return scales, packed, sr, pr
}

// coverage counts the special situations a quantize case exercises.
func (f *file) coverage(w []float32, scales []uint16, l quant.Layout) {
	qmax := float32(l.Precision.QMax())
	gpr := l.GroupsPerRow()
	for i, s := range scales {
		switch {
		case s == 0:
			f.cover["zero scales"]++
		case s == 1:
			f.cover["scales 0x0001 (2^-24)"]++
		case s < 0x400:
			f.cover["other binary16-subnormal scales"]++
		}
		if s == 0 {
			continue
		}
		inv := quant.Reciprocal(s)
		r, g := i/gpr, i%gpr
		lo, hi := l.Group(g)
		for _, x := range w[r*l.Cols+lo : r*l.Cols+hi] {
			v := float32(x * inv)
			switch av := float32(math.Abs(float64(v))); {
			case av > qmax+0.5:
				f.cover["clamped elements"]++
			case av == float32(math.Floor(float64(av)))+0.5:
				f.cover["exact rounding ties"]++
			}
		}
	}
	for _, x := range w {
		switch b := math.Float32bits(x); {
		case b == 0x80000000:
			f.cover["-0 inputs"]++
		case b&0x7f800000 == 0 && b&0x7fffff != 0:
			f.cover["binary32 subnormal inputs"]++
		}
	}
}

// matmulRec adds one MatMul record: x is a view of the first m rows of a
// pooled [mMax, cols] activation buffer.
func (f *file) matmulRec(name string, x []float32, xr ref, m int, packed []byte, scales []uint16, pr, sr ref, l quant.Layout) {
	y := make([]float32, m*l.Rows)
	check(refb.MatMul(y, x[:m*l.Cols], m, packed, scales, l))
	dims := append(layoutDims(l), int64(m))
	f.rec(kindMatMul, fmt.Sprintf("%s/m%d", name, m), dims,
		[]ref{xr.view(0, uint64(4*m*l.Cols)), pr, sr}, []ref{f.f32(y)})
}

// channelStatsRec splits x [sum(batches), channels] into consecutive batches,
// merges them in order with the reference backend and records the running
// statistics after each.
func (f *file) channelStatsRec(name string, x []float32, channels int, batches []int) {
	st := quant.NewStats(channels)
	dims := []int64{int64(channels), int64(len(batches))}
	var in, out []ref
	t0 := 0
	for _, tokens := range batches {
		xb := x[t0*channels : (t0+tokens)*channels]
		t0 += tokens
		check(refb.ChannelStats(st, xb, tokens))
		dims = append(dims, int64(tokens))
		in = append(in, f.f32(xb))
		out = append(out, f.i64(st.Count), f.f64(st.Mean), f.f64(st.M2))
	}
	if t0*channels != len(x) {
		fatalf("%s: batches cover %d tokens, x has %d", name, t0, len(x)/channels)
	}
	f.rec(kindChannelStats, name, dims, in, out)
}

// ---------------------------------------------------------------------------
// Golden vectors.

func decodeHex(b quanttest.Buffer) []byte {
	raw, err := hex.DecodeString(b.Hex)
	if err != nil {
		fatalf("buffer %s: %v", b.Name, err)
	}
	return raw
}

func findBuf(list []quanttest.Buffer, name string) (quanttest.Buffer, bool) {
	for _, b := range list {
		if b.Name == name {
			return b, true
		}
	}
	return quanttest.Buffer{}, false
}

func mustBuf(g *quanttest.GoldenFile, list []quanttest.Buffer, name string) quanttest.Buffer {
	b, ok := findBuf(list, name)
	if !ok {
		fatalf("golden %s: no buffer %q", g.Name, name)
	}
	return b
}

func bytesF32(raw []byte) []float32 {
	v := make([]float32, len(raw)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v
}

func bytesU16(raw []byte) []uint16 {
	v := make([]uint16, len(raw)/2)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(raw[2*i:])
	}
	return v
}

func bytesF64(raw []byte) []float64 {
	v := make([]float64, len(raw)/8)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return v
}

// sameBytes fails the generator when the reference backend no longer
// reproduces a golden output: the golden files would be stale and the GPU
// check ambiguous.
func sameBytes(what string, got, want []byte) {
	if string(got) != string(want) {
		fatalf("%s: the cpu backend disagrees with the golden file (stale golden vectors? run go test ./cpu -run TestGolden)", what)
	}
}

func (f *file) addGolden(dir string) int {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	check(err)
	if len(paths) == 0 {
		fatalf("no golden vectors in %s", dir)
	}
	sort.Strings(paths)
	for _, path := range paths {
		data, err := os.ReadFile(path)
		check(err)
		var g quanttest.GoldenFile
		if err := json.Unmarshal(data, &g); err != nil {
			fatalf("%s: %v", path, err)
		}
		if g.Format != quanttest.GoldenFormat {
			fatalf("%s: format %q, want %q", path, g.Format, quanttest.GoldenFormat)
		}
		name := "golden/" + g.Name
		var l quant.Layout
		if g.Layout != nil {
			p, err := quant.ParsePrecision(g.Layout.Precision)
			check(err)
			l = quant.Layout{Rows: g.Layout.Rows, Cols: g.Layout.Cols, GroupSize: g.Layout.GroupSize, Precision: p}
			check(l.Validate())
		}
		switch g.Kind {
		case "quantize":
			wraw := decodeHex(mustBuf(&g, g.Inputs, "w"))
			sraw := decodeHex(mustBuf(&g, g.Outputs, "scales"))
			praw := decodeHex(mustBuf(&g, g.Outputs, "packed"))
			draw := decodeHex(mustBuf(&g, g.Outputs, "dequantized"))
			w, scales := bytesF32(wraw), bytesU16(sraw)
			// Cross-check against the reference backend.
			s2 := make([]uint16, l.NumScales())
			check(refb.GroupScales(s2, w, l))
			sameBytes(name+" scales", u16Bytes(s2), sraw)
			p2 := make([]byte, l.PackedBytes())
			check(refb.Quantize(p2, w, scales, l))
			sameBytes(name+" packed", p2, praw)
			d2 := make([]float32, l.Elements())
			check(refb.Dequantize(d2, praw, scales, l))
			sameBytes(name+" dequantized", f32Bytes(d2), draw)
			f.coverage(w, scales, l)

			wr, sr, pr := f.add(dtF32, wraw), f.add(dtF16, sraw), f.add(dtU8, praw)
			dims := layoutDims(l)
			f.rec(kindGroupScales, name+"/groupscales", dims, []ref{wr}, []ref{sr, f.i64(statusOf(nil)...)})
			f.rec(kindQuantize, name+"/quantize", dims, []ref{wr, sr}, []ref{pr})
			f.rec(kindDequantize, name+"/dequantize", dims, []ref{pr, sr}, []ref{f.add(dtF32, draw)})
		case "groupscales_error":
			wraw := decodeHex(mustBuf(&g, g.Inputs, "w"))
			if g.Error == nil {
				fatalf("%s: no expected error", path)
			}
			var st []int64
			switch e := g.Error; {
			case e.Type == "NonFiniteError" && e.Index != nil:
				st = []int64{statusNonFinite, int64(*e.Index), 0, int64(parseBits(e.Value))}
			case e.Type == "ScaleOverflowError" && e.Row != nil && e.Group != nil:
				st = []int64{statusOverflow, int64(*e.Row), int64(*e.Group), int64(parseBits(e.AbsMax))}
			default:
				fatalf("%s: malformed error %+v", path, *e)
			}
			s2 := make([]uint16, l.NumScales())
			got := statusOf(refb.GroupScales(s2, bytesF32(wraw), l))
			if fmt.Sprint(got) != fmt.Sprint(st) {
				fatalf("%s: cpu error status %v, golden %v", name, got, st)
			}
			f.rec(kindGroupScalesError, name+"/groupscales", layoutDims(l),
				[]ref{f.add(dtF32, wraw)}, []ref{f.i64(st...)})
		case "matmul":
			xraw := decodeHex(mustBuf(&g, g.Inputs, "x"))
			praw := decodeHex(mustBuf(&g, g.Inputs, "packed"))
			sraw := decodeHex(mustBuf(&g, g.Inputs, "scales"))
			yraw := decodeHex(mustBuf(&g, g.Outputs, "y"))
			y2 := make([]float32, g.M*l.Rows)
			check(refb.MatMul(y2, bytesF32(xraw), g.M, praw, bytesU16(sraw), l))
			sameBytes(name+" y", f32Bytes(y2), yraw)
			f.rec(kindMatMul, name, append(layoutDims(l), int64(g.M)),
				[]ref{f.add(dtF32, xraw), f.add(dtU8, praw), f.add(dtF16, sraw)}, []ref{f.add(dtF32, yraw)})
		case "channelstats":
			st := quant.NewStats(g.Channels)
			dims := []int64{int64(g.Channels), 0}
			var in, out []ref
			for k := 0; ; k++ {
				b, ok := findBuf(g.Inputs, fmt.Sprintf("batch%d", k))
				if !ok {
					break
				}
				raw := decodeHex(b)
				tokens := b.Shape[0]
				check(refb.ChannelStats(st, bytesF32(raw), tokens))
				craw := decodeHex(mustBuf(&g, g.Outputs, fmt.Sprintf("after%d.count", k)))
				mraw := decodeHex(mustBuf(&g, g.Outputs, fmt.Sprintf("after%d.mean", k)))
				m2raw := decodeHex(mustBuf(&g, g.Outputs, fmt.Sprintf("after%d.m2", k)))
				sameBytes(fmt.Sprintf("%s after%d.count", name, k), i64Bytes([]int64{st.Count}), craw)
				sameBytes(fmt.Sprintf("%s after%d.mean", name, k), f64Bytes(st.Mean), mraw)
				sameBytes(fmt.Sprintf("%s after%d.m2", name, k), f64Bytes(st.M2), m2raw)
				dims = append(dims, int64(tokens))
				in = append(in, f.add(dtF32, raw))
				out = append(out, f.add(dtI64, craw), f.add(dtF64, mraw), f.add(dtF64, m2raw))
			}
			if len(in) == 0 {
				fatalf("%s: no batches", path)
			}
			dims[1] = int64(len(in))
			f.rec(kindChannelStats, name, dims, in, out)
		default:
			fatalf("%s: unknown kind %q", path, g.Kind)
		}
	}
	return len(paths)
}

func parseBits(s string) uint32 {
	var v uint32
	if _, err := fmt.Sscanf(s, "%08x", &v); err != nil || len(s) != 8 {
		fatalf("bad bits %q", s)
	}
	return v
}

// ---------------------------------------------------------------------------
// Random inputs.

func pow2(e int) float64 { return math.Ldexp(1, e) }

// studentT draws from Student's t with nu degrees of freedom.
func studentT(r *rand.Rand, nu int) float64 {
	var chi float64
	for range nu {
		g := r.NormFloat64()
		chi += g * g
	}
	return r.NormFloat64() / math.Sqrt(chi/float64(nu))
}

// heavyWeights returns rows×cols weights: Student-t (3 degrees of freedom)
// on a per-row magnitude, with rare outliers (×30…×330), exact zeros and -0.
func heavyWeights(r *rand.Rand, rows, cols int) []float32 {
	w := make([]float32, rows*cols)
	for i := range rows {
		m := pow2(r.IntN(7) - 9)
		x := w[i*cols : (i+1)*cols]
		for j := range x {
			v := studentT(r, 3) * m
			switch r.IntN(4096) {
			case 0, 1:
				v *= 30 + 300*r.Float64()
			case 2:
				v = 0
			case 3:
				v = math.Copysign(0, -1)
			}
			x[j] = float32(v)
		}
	}
	return w
}

// special overwrites some rows of w with the situations the arithmetic must
// get right: every row whose index i satisfies pick(i) gets pattern i mod 6.
// Only l's shape is used.
func special(r *rand.Rand, w []float32, l quant.Layout, pick func(int) bool) {
	sign := func() float64 { return float64(2*r.IntN(2) - 1) }
	for i := range l.Rows {
		if !pick(i) {
			continue
		}
		// w is shared by the INT8 and INT4 records: the ties and tiny rows
		// alternate between the two qmax, and the near-limit rows use INT4's.
		qmax := []float64{127, 7}[(i/6)%2]
		row := w[i*l.Cols : (i+1)*l.Cols]
		for g := range l.GroupsPerRow() {
			lo, hi := l.Group(g)
			x := row[lo:hi]
			switch i % 6 {
			case 0: // tiny: binary16-subnormal scales (and 0x0001 bumps), clamping
				amax := qmax * pow2(r.IntN(14)-27) * (1 + r.Float64())
				for j := range x {
					x[j] = float32((2*r.Float64() - 1) * amax)
				}
				x[r.IntN(len(x))] = float32(sign() * amax)
			case 1: // exact ties on the power-of-two scale 2^e
				e := r.IntN(36) - 24 // 2^-24 … 2^11: 127·2^11 still fits INT4
				for j := range x {
					k := float64(r.IntN(2*int(qmax)) - int(qmax))
					x[j] = float32((k + 0.5) * pow2(e))
				}
				x[r.IntN(len(x))] = float32(sign() * qmax * pow2(e))
			case 2: // zero groups: +0, -0, mixed; other groups normal with -0s
				switch g % 3 {
				case 0:
					clear(x)
				case 1:
					for j := range x {
						x[j] = float32(math.Copysign(0, sign()))
					}
				default:
					for j := range x {
						x[j] = float32(r.NormFloat64())
						if r.IntN(3) == 0 {
							x[j] = float32(math.Copysign(0, -1))
						}
					}
				}
			case 3: // binary32 subnormals (scale bumped to 0x0001)
				for j := range x {
					x[j] = math.Float32frombits(uint32(r.IntN(0x7fffff)+1) | uint32(r.IntN(2))<<31)
				}
			case 4: // near the binary16 scale limit, but under it
				amax := 7 * (60000 + 5000*r.Float64())
				for j := range x {
					x[j] = float32((2*r.Float64() - 1) * amax)
				}
				x[r.IntN(len(x))] = float32(sign() * amax)
			default: // the conformance suite's mix of group kinds
				// (INT4's, whose near-limit groups also fit INT8)
				one := quant.Layout{Rows: 1, Cols: len(x), GroupSize: len(x), Precision: quant.INT4}
				copy(x, quanttest.Weights(r, one))
			}
		}
	}
}

// activations returns m×k heavy-tailed activations with a few outlier
// channels (×20…×100), as transformer inputs have, plus zeros and -0.
func activations(r *rand.Rand, m, k int) []float32 {
	mult := make([]float64, k)
	for c := range mult {
		mult[c] = 1
		if r.IntN(100) == 0 {
			mult[c] = 20 + 80*r.Float64()
		}
	}
	x := make([]float32, m*k)
	for i := range x {
		v := studentT(r, 4) * mult[i%k]
		switch r.IntN(1000) {
		case 0:
			v = 0
		case 1:
			v = math.Copysign(0, -1)
		}
		x[i] = float32(v)
	}
	return x
}

func layout(rows, cols, gs int, p quant.Precision) quant.Layout {
	return quant.Layout{Rows: rows, Cols: cols, GroupSize: gs, Precision: p}
}

var precisions = []quant.Precision{quant.INT8, quant.INT4}

func main() {
	out := flag.String("o", "", "output directory (cases.bin is written there)")
	golden := flag.String("golden", "", "golden vector directory (default: testdata/golden of the module)")
	seed := flag.Uint64("seed", 20250601, "seed of the random cases")
	flag.Parse()
	if *out == "" {
		fatalf("usage: gen -o DIR")
	}
	if *golden == "" {
		root, err := moduleRoot()
		check(err)
		*golden = filepath.Join(root, "testdata", "golden")
	}
	check(os.MkdirAll(*out, 0o755))

	f := &file{seen: map[string]bool{}, cover: map[string]int{}, sum: sha256.New()}
	ng := f.addGolden(*golden)
	nGoldenRecs := len(f.recs)
	rng := func(label string) *rand.Rand {
		var h uint64 = 14695981039346656037
		for _, c := range []byte(label) {
			h = (h ^ uint64(c)) * 1099511628211
		}
		return rand.New(rand.NewPCG(*seed, h))
	}

	// --- Quantize sets: GroupScales, Quantize, Dequantize on the same w.
	type qset struct {
		name           string
		rows, cols, gs int
		specialEvery   int // rows i with (i / 8) % specialEvery == 0 are special; 0: none
		dqRows         int
	}
	for _, q := range []qset{
		{"big_4096x4096_g128", 4096, 4096, 128, 16, 512},
		{"heavy_300x1000_g64", 300, 1000, 64, 4, 0},
		{"odd_17x4099_g7", 17, 4099, 7, 2, 0},
		{"ragged_200x1000_g172", 200, 1000, 172, 4, 0},
		{"special_240x1000_g32", 240, 1000, 32, 1, 0},
		{"maxgroup_12x8192_g4096", 12, 8192, 4096, 1, 0},
		{"g1_9x101", 9, 101, 1, 1, 0},
		{"tiny_1x1_g128", 1, 1, 128, 0, 0},
		{"cols_lt_group_5x33_g64", 5, 33, 64, 1, 0},
	} {
		r := rng(q.name)
		w := heavyWeights(r, q.rows, q.cols)
		if q.specialEvery > 0 {
			every := q.specialEvery
			l := layout(q.rows, q.cols, q.gs, quant.INT8)
			// pick every row of 1 block of 8 rows out of `every` blocks
			pick := func(i int) bool { return (i/8)%every == 0 }
			if every == 1 {
				pick = func(i int) bool { return i%8 < 6 }
			}
			special(r, w, l, pick)
		}
		wr := f.f32(w)
		for _, p := range precisions {
			l := layout(q.rows, q.cols, q.gs, p)
			f.quantizeSet(fmt.Sprintf("random/%s_%v", q.name, p), w, wr, l, q.dqRows)
		}
	}

	// --- GroupScales errors: lowest non-finite index across many groups and
	// threads; first overflowing group in row-major order.
	{
		r := rng("errors")
		l := layout(64, 4096, 128, quant.INT8)
		w := heavyWeights(r, l.Rows, l.Cols)
		w[40*4096+3000] = float32(7e6 * 127) // overflow, but a NaN comes later and wins
		w[61*4096+5] = math.Float32frombits(0x7f800000)
		w[37*4096+4095] = math.Float32frombits(0xffc00123) // lowest: a negative quiet NaN with payload
		w[38*4096+0] = math.Float32frombits(0x7fa00001)
		w[63*4096+4095] = float32(math.Inf(-1))
		s := make([]uint16, l.NumScales())
		st := statusOf(refb.GroupScales(s, w, l))
		if st[0] != statusNonFinite {
			fatalf("errors case: want a NonFiniteError, got %v", st)
		}
		f.rec(kindGroupScalesError, "random/nonfinite_64x4096_g128_int8/groupscales", layoutDims(l), []ref{f.f32(w)}, []ref{f.i64(st...)})

		l4 := layout(50, 1000, 64, quant.INT4)
		w = heavyWeights(r, l4.Rows, l4.Cols)
		w[49*1000+999] = 1e9
		w[31*1000+700] = -65520 * 7     // the smallest INT4 absmax that overflows: s32 = 65520
		w[31*1000+710] = -65519.996 * 7 // (not the max of its group)
		w[17*1000+64] = 65504 * 7       // fits exactly (group 1 of row 17)
		w[44*1000+0] = -3e38
		s = make([]uint16, l4.NumScales())
		st = statusOf(refb.GroupScales(s, w, l4))
		if st[0] != statusOverflow {
			fatalf("overflow case: want a ScaleOverflowError, got %v", st)
		}
		f.rec(kindGroupScalesError, "random/overflow_50x1000_g64_int4/groupscales", layoutDims(l4), []ref{f.f32(w)}, []ref{f.i64(st...)})
	}

	// --- Dequantize and MatMul on arbitrary codes: INT8 -128 and INT4 -8
	// (never produced by Quantize) and junk in the pad nibble of odd rows.
	for _, p := range precisions {
		r := rng("codes" + p.String())
		l := layout(65, 333, 16, p)
		packed := quanttest.Codes(r, l)
		scales := quanttest.Scales(r, l, 0x3c00) // up to 1.0: no overflow in MatMul
		deq := make([]float32, l.Elements())
		check(refb.Dequantize(deq, packed, scales, l))
		name := fmt.Sprintf("random/anycodes_65x333_g16_%v", p)
		pr, sr := f.u8(packed), f.f16(scales)
		f.rec(kindDequantize, name+"/dequantize", layoutDims(l), []ref{pr, sr}, []ref{f.f32(deq)})
		x := activations(r, 8, l.Cols)
		xr := f.f32(x)
		for _, m := range []int{1, 8} {
			f.matmulRec(name+"/matmul", x, xr, m, packed, scales, pr, sr, l)
		}
	}

	// --- MatMul: W quantized by the reference, x heavy-tailed activations.
	type mset struct {
		name           string
		rows, cols, gs int
		ms             []int
		special        bool
	}
	for _, q := range []mset{
		{"512x4096_g128", 512, 4096, 128, []int{1, 5, 8, 16, 64}, false},    // 32 groups: one per lane
		{"ragged_100x300_g64", 100, 300, 64, []int{1, 5, 8, 16, 64}, false}, // 5 groups: most lanes empty
		{"lanes_wrap_64x4096_g32", 64, 4096, 32, []int{1, 8}, false},        // 128 groups: 4 per lane
		{"odd_256x4099_g7", 256, 4099, 7, []int{1, 5}, false},               // 586 groups, odd cols
		{"ragged_48x1000_g172", 48, 1000, 172, []int{3, 16}, false},
		{"special_96x1000_g32", 96, 1000, 32, []int{1, 5}, true}, // tiny scales, ties, zeros, subnormals
	} {
		r := rng("matmul" + q.name)
		w := heavyWeights(r, q.rows, q.cols)
		if q.special {
			special(r, w, layout(q.rows, q.cols, q.gs, quant.INT8), func(i int) bool { return i%8 < 6 })
		}
		mMax := slicesMax(q.ms)
		x := activations(r, mMax, q.cols)
		xr := f.f32(x)
		for _, p := range precisions {
			l := layout(q.rows, q.cols, q.gs, p)
			scales := make([]uint16, l.NumScales())
			check(refb.GroupScales(scales, w, l))
			packed := make([]byte, l.PackedBytes())
			check(refb.Quantize(packed, w, scales, l))
			pr, sr := f.u8(packed), f.f16(scales)
			for _, m := range q.ms {
				f.matmulRec(fmt.Sprintf("random/matmul_%s_%v", q.name, p), x, xr, m, packed, scales, pr, sr, l)
			}
		}
	}

	// --- ChannelStats: per-batch Welford, merged in order.
	{
		r := rng("stats")
		// heavy-tailed with per-channel offsets
		const C = 300
		batches := []int{37, 1, 500}
		T := 538
		x := make([]float32, T*C)
		off := make([]float64, C)
		for c := range off {
			off[c] = []float64{0, 0, 1, -3, 1e3, -2.5e4, 1e6, 0.5}[r.IntN(8)]
		}
		for i := range x {
			x[i] = float32(off[i%C] + studentT(r, 3)*pow2(r.IntN(4)-2))
		}
		f.channelStatsRec("random/channelstats_heavy_300ch_b37+1+500", x, C, batches)
		f.channelStatsRec("random/channelstats_mixed_300ch_b37+1+500", quanttest.Activations(r, T, C), C, batches)
		f.channelStatsRec("random/channelstats_mixed_4096ch_b128+7+1+64", quanttest.Activations(r, 200, 4096), 4096, []int{128, 7, 1, 64})
		// batch sizes whose products are not exact powers of two, so that the
		// order of the merge's multiplications matters
		f.channelStatsRec("random/channelstats_mixed_2048ch_b37+93+11+250", quanttest.Activations(r, 391, 2048), 2048, []int{37, 93, 11, 250})
		f.channelStatsRec("random/channelstats_5ch_b3+0+2+0", quanttest.Activations(r, 5, 5), 5, []int{3, 0, 2, 0})
		f.channelStatsRec("random/channelstats_64ch_b1000", quanttest.Activations(r, 1000, 64), 64, []int{1000})
		f.channelStatsRec("random/channelstats_1000ch_b1+1+1", quanttest.Activations(r, 3, 1000), 1000, []int{1, 1, 1})
	}

	path := filepath.Join(*out, "cases.bin")
	size, err := f.write(path)
	check(err)

	counts := map[uint32]int{}
	for _, r := range f.recs {
		counts[r.kind]++
	}
	fmt.Printf("wrote %s: %d bytes (%.1f MiB), %d buffers, %d records (%d from %d golden files)\nsha256 %x\n",
		path, size, float64(size)/(1<<20), len(f.bufs), len(f.recs), nGoldenRecs, ng, f.sum.Sum(nil))
	names := map[uint32]string{kindGroupScales: "groupscales", kindGroupScalesError: "groupscales_error",
		kindQuantize: "quantize", kindDequantize: "dequantize", kindMatMul: "matmul", kindChannelStats: "channelstats"}
	var parts []string
	for k := uint32(1); k <= 6; k++ {
		parts = append(parts, fmt.Sprintf("%s %d", names[k], counts[k]))
	}
	fmt.Println("records by kind:", strings.Join(parts, ", "))
	keys := make([]string, 0, len(f.cover))
	for k := range f.cover {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts = parts[:0]
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, f.cover[k]))
	}
	fmt.Println("quantize coverage:", strings.Join(parts, ", "))
}

func slicesMax(v []int) int {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// moduleRoot walks up from the working directory to the go.mod of the module.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory; pass -golden")
		}
		dir = parent
	}
}
