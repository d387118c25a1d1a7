package quanttest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/mixq/mixq/quant"
)

// GoldenFormat identifies the golden-vector format; testdata/golden/README.md
// describes it.
const GoldenFormat = "mixq-golden-v1"

// GoldenFile is one golden case: the inputs of one or more kernels and their
// exact outputs, every buffer hex-encoded little-endian.
type GoldenFile struct {
	Format      string        `json:"format"`
	Name        string        `json:"name"`
	Kind        string        `json:"kind"` // quantize, groupscales_error, matmul, channelstats
	Kernels     []string      `json:"kernels"`
	Description string        `json:"description"`
	Layout      *GoldenLayout `json:"layout,omitempty"`
	M           int           `json:"m,omitempty"`
	Channels    int           `json:"channels,omitempty"`
	Generator   Generator     `json:"generator"`
	Inputs      []Buffer      `json:"inputs"`
	Outputs     []Buffer      `json:"outputs"`
	Error       *GoldenError  `json:"error,omitempty"`
}

// GoldenLayout is a quant.Layout with its precision by name.
type GoldenLayout struct {
	Rows      int    `json:"rows"`
	Cols      int    `json:"cols"`
	GroupSize int    `json:"group_size"`
	Precision string `json:"precision"`
}

// Buffer is a named array: dtype is f32, f64, f16 (raw binary16 bits), u8,
// i4x2 (packed INT4 rows) or i64; hex holds its bytes, little-endian.
type Buffer struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	Hex   string `json:"hex"`
}

// GoldenError is the error a case expects: NonFiniteError with index and
// value bits, or ScaleOverflowError with row, group and absmax bits.
type GoldenError struct {
	Type   string `json:"type"`
	Index  *int   `json:"index,omitempty"`
	Value  string `json:"value_bits,omitempty"`
	Row    *int   `json:"row,omitempty"`
	Group  *int   `json:"group,omitempty"`
	AbsMax string `json:"absmax_bits,omitempty"`
}

// Generator records how the f32 inputs were made, so that a case can be
// regenerated in any language: one splitmix64 stream per file, seeded with
// Seed, consumed by the generated buffers in order. See the README.
type Generator struct {
	Algorithm string      `json:"algorithm"`
	Seed      uint64      `json:"seed"`
	Buffers   []GenBuffer `json:"buffers"`
}

// GenBuffer is one generated f32 buffer: Count uniform values in [-1, 1)
// times Multiplier (a power of two, so exact), then the edits in order.
type GenBuffer struct {
	Name       string  `json:"name"`
	Count      int     `json:"count"`
	Multiplier float64 `json:"multiplier"`
	Edits      []Edit  `json:"edits,omitempty"`
	Note       string  `json:"note,omitempty"`
}

// Edit changes elements First + j·Stride for j < Count (Stride 0 means 1):
//
//	fill       x = float32 with bits Bits
//	scale      x = x · Factor (a power of two: exact unless it underflows)
//	add        x = f32(x + float32(Value))
//	subnormal  z = next(); x = bits((z>>41)|1 | (z&1)<<31), a binary32 subnormal
//	ties       z = next(); x = (k + 0.5)·2^Exp with k = (z>>32) mod 2·QMax − QMax,
//	           then x[First] = QMax·2^Exp, so the scale is exactly 2^Exp and
//	           every other value is an exact rounding tie
type Edit struct {
	Op     string  `json:"op"`
	First  int     `json:"first"`
	Count  int     `json:"count"`
	Stride int     `json:"stride,omitempty"`
	Bits   string  `json:"bits,omitempty"`
	Factor float64 `json:"factor,omitempty"`
	Value  float64 `json:"value,omitempty"`
	Exp    int     `json:"exp,omitempty"`
	QMax   int     `json:"qmax,omitempty"`
}

// splitmix64 is the generator of the golden inputs.
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// uniform is (int(z>>40) − 2^23)·2^-23, exactly, in [-1, 1).
func (s *splitmix64) uniform() float32 {
	return float32(int32(s.next()>>40)-1<<23) * 0x1p-23
}

// generate makes the buffers of g, in order, from one stream.
func (g Generator) generate() (map[string][]float32, error) {
	if g.Algorithm != "splitmix64-uniform-v1" {
		return nil, fmt.Errorf("unknown generator %q", g.Algorithm)
	}
	rng := splitmix64(g.Seed)
	out := map[string][]float32{}
	for _, b := range g.Buffers {
		x := make([]float32, b.Count)
		for i := range x {
			x[i] = rng.uniform() * float32(b.Multiplier)
		}
		for _, e := range b.Edits {
			stride := max(e.Stride, 1)
			for j := range e.Count {
				i := e.First + j*stride
				if i < 0 || i >= len(x) {
					return nil, fmt.Errorf("buffer %s: edit %s index %d out of range", b.Name, e.Op, i)
				}
				switch e.Op {
				case "fill":
					bits, err := parseBits32(e.Bits)
					if err != nil {
						return nil, err
					}
					x[i] = math.Float32frombits(bits)
				case "scale":
					x[i] = float32(x[i] * float32(e.Factor))
				case "add":
					x[i] = float32(x[i] + float32(e.Value))
				case "subnormal":
					z := rng.next()
					x[i] = math.Float32frombits(uint32(z>>41) | 1 | uint32(z&1)<<31)
				case "ties":
					z := rng.next()
					k := int((z>>32)%uint64(2*e.QMax)) - e.QMax
					x[i] = float32(math.Ldexp(float64(k)+0.5, e.Exp))
				default:
					return nil, fmt.Errorf("buffer %s: unknown edit %q", b.Name, e.Op)
				}
			}
			if e.Op == "ties" {
				x[e.First] = float32(math.Ldexp(float64(e.QMax), e.Exp))
			}
		}
		out[b.Name] = x
	}
	return out, nil
}

func parseBits32(s string) (uint32, error) {
	var v uint32
	if _, err := fmt.Sscanf(s, "%08x", &v); err != nil || len(s) != 8 {
		return 0, fmt.Errorf("bad bits %q", s)
	}
	return v, nil
}

// Encoding and decoding of buffers.

func encode[E Element](name, dtype string, shape []int, v []E) Buffer {
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, v)
	return Buffer{Name: name, DType: dtype, Shape: shape, Hex: hex.EncodeToString(buf.Bytes())}
}

func decode[E Element](b Buffer) ([]E, error) {
	raw, err := hex.DecodeString(b.Hex)
	if err != nil {
		return nil, fmt.Errorf("buffer %s: %v", b.Name, err)
	}
	var zero E
	size := binary.Size(zero)
	if len(raw)%size != 0 {
		return nil, fmt.Errorf("buffer %s: %d bytes is not a whole number of %s", b.Name, len(raw), b.DType)
	}
	v := make([]E, len(raw)/size)
	if err := binary.Read(bytes.NewReader(raw), binary.LittleEndian, v); err != nil {
		return nil, err
	}
	n := 1
	for _, d := range b.Shape {
		n *= d
	}
	if b.DType == "i4x2" { // shape is [rows, cols]: rows·ceil(cols/2) bytes
		n = b.Shape[0] * ((b.Shape[1] + 1) / 2)
	}
	if n != len(v) {
		return nil, fmt.Errorf("buffer %s: %d elements, shape %v needs %d", b.Name, len(v), b.Shape, n)
	}
	return v, nil
}

func (f *GoldenFile) buffer(list []Buffer, name string) (Buffer, error) {
	for _, b := range list {
		if b.Name == name {
			return b, nil
		}
	}
	return Buffer{}, fmt.Errorf("%s: no buffer %q", f.Name, name)
}

func (f *GoldenFile) f32(list []Buffer, name string) ([]float32, error) {
	b, err := f.buffer(list, name)
	if err != nil {
		return nil, err
	}
	return decode[float32](b)
}

func (f *GoldenFile) layout() (quant.Layout, error) {
	if f.Layout == nil {
		return quant.Layout{}, fmt.Errorf("%s: no layout", f.Name)
	}
	p, err := quant.ParsePrecision(f.Layout.Precision)
	if err != nil {
		return quant.Layout{}, err
	}
	l := quant.Layout{Rows: f.Layout.Rows, Cols: f.Layout.Cols, GroupSize: f.Layout.GroupSize, Precision: p}
	return l, l.Validate()
}

func packedType(l quant.Layout) string {
	if l.Precision == quant.INT4 {
		return "i4x2"
	}
	return "u8"
}

func goldenLayout(l quant.Layout) *GoldenLayout {
	return &GoldenLayout{Rows: l.Rows, Cols: l.Cols, GroupSize: l.GroupSize, Precision: l.Precision.String()}
}

func bits32(v float32) string { return fmt.Sprintf("%08x", math.Float32bits(v)) }

func goldenError(err error) (*GoldenError, error) {
	switch e := err.(type) {
	case nil:
		return nil, nil
	case *quant.NonFiniteError:
		return &GoldenError{Type: "NonFiniteError", Index: &e.Index, Value: bits32(e.Value)}, nil
	case *quant.ScaleOverflowError:
		return &GoldenError{Type: "ScaleOverflowError", Row: &e.Row, Group: &e.Group, AbsMax: bits32(e.AbsMax)}, nil
	}
	return nil, fmt.Errorf("unexpected error: %v", err)
}

func (g *GoldenError) err() (error, error) {
	switch {
	case g.Type == "NonFiniteError" && g.Index != nil:
		v, err := parseBits32(g.Value)
		return &quant.NonFiniteError{Index: *g.Index, Value: math.Float32frombits(v)}, err
	case g.Type == "ScaleOverflowError" && g.Row != nil && g.Group != nil:
		v, err := parseBits32(g.AbsMax)
		return &quant.ScaleOverflowError{Row: *g.Row, Group: *g.Group, AbsMax: math.Float32frombits(v)}, err
	}
	return nil, fmt.Errorf("malformed expected error %+v", g)
}

// TestGolden checks that b reproduces every golden vector in dir (the
// testdata/golden directory of the module) exactly. Each file is a subtest.
// The outputs of one kernel are not fed to the next: every kernel runs on
// the inputs stored for it, so a failure names one kernel.
func TestGolden(t *testing.T, b quant.Backend, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no golden vectors in %s", dir)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var f GoldenFile
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if f.Format != GoldenFormat {
				t.Fatalf("%s: format %q, want %q", path, f.Format, GoldenFormat)
			}
			if err := checkGolden(t, b, &f); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		})
	}
}

func checkGolden(t *testing.T, b quant.Backend, f *GoldenFile) error {
	switch f.Kind {
	case "quantize", "groupscales_error":
		l, err := f.layout()
		if err != nil {
			return err
		}
		w, err := f.f32(f.Inputs, "w")
		if err != nil {
			return err
		}
		got := testU16(l.NumScales())
		gerr := call(t, "GroupScales", func() error { return b.GroupScales(got.In, w, l) })
		got.Check(t, "GroupScales")
		if f.Kind == "groupscales_error" {
			if f.Error == nil {
				return fmt.Errorf("no expected error")
			}
			want, err := f.Error.err()
			if err != nil {
				return err
			}
			RequireSameError(t, "GroupScales", gerr, want)
			return nil
		}
		RequireSameError(t, "GroupScales", gerr, nil)
		sb, err := f.buffer(f.Outputs, "scales")
		if err != nil {
			return err
		}
		scales, err := decode[uint16](sb)
		if err != nil {
			return err
		}
		RequireEqualBits(t, "GroupScales: scales", got.In, scales)

		pb, err := f.buffer(f.Outputs, "packed")
		if err != nil {
			return err
		}
		packed, err := decode[uint8](pb)
		if err != nil {
			return err
		}
		gp := testU8(l.PackedBytes())
		gerr = call(t, "Quantize", func() error { return b.Quantize(gp.In, w, scales, l) })
		gp.Check(t, "Quantize")
		RequireSameError(t, "Quantize", gerr, nil)
		RequireEqualBits(t, "Quantize: packed", gp.In, packed)

		deq, err := f.f32(f.Outputs, "dequantized")
		if err != nil {
			return err
		}
		gd := testF32(l.Elements())
		gerr = call(t, "Dequantize", func() error { return b.Dequantize(gd.In, packed, scales, l) })
		gd.Check(t, "Dequantize")
		RequireSameError(t, "Dequantize", gerr, nil)
		RequireEqualBits(t, "Dequantize: w", gd.In, deq)
		return nil

	case "matmul":
		l, err := f.layout()
		if err != nil {
			return err
		}
		x, err := f.f32(f.Inputs, "x")
		if err != nil {
			return err
		}
		pb, err := f.buffer(f.Inputs, "packed")
		if err != nil {
			return err
		}
		packed, err := decode[uint8](pb)
		if err != nil {
			return err
		}
		sb, err := f.buffer(f.Inputs, "scales")
		if err != nil {
			return err
		}
		scales, err := decode[uint16](sb)
		if err != nil {
			return err
		}
		want, err := f.f32(f.Outputs, "y")
		if err != nil {
			return err
		}
		gy := testF32(f.M * l.Rows)
		gerr := call(t, "MatMul", func() error { return b.MatMul(gy.In, x, f.M, packed, scales, l) })
		gy.Check(t, "MatMul")
		RequireSameError(t, "MatMul", gerr, nil)
		RequireEqualBits(t, "MatMul: y", gy.In, want)
		return nil

	case "channelstats":
		s := newStatsPair(f.Channels)
		for k := 0; ; k++ {
			bb, err := f.buffer(f.Inputs, fmt.Sprintf("batch%d", k))
			if err != nil {
				if k == 0 {
					return err
				}
				return nil
			}
			x, err := decode[float32](bb)
			if err != nil {
				return err
			}
			tokens := bb.Shape[0]
			what := fmt.Sprintf("ChannelStats batch %d", k)
			gerr := call(t, what, func() error { return b.ChannelStats(s.got, x, tokens) })
			for _, g := range []*Guarded[float64]{s.gm, s.gm2} {
				g.Check(t, what)
			}
			RequireSameError(t, what, gerr, nil)
			cb, err := f.buffer(f.Outputs, fmt.Sprintf("after%d.count", k))
			if err != nil {
				return err
			}
			count, err := decode[int64](cb)
			if err != nil {
				return err
			}
			RequireEqualBits(t, what+": Count", []int64{s.got.Count}, count)
			for _, part := range []struct {
				name string
				got  []float64
			}{{"mean", s.got.Mean}, {"m2", s.got.M2}} {
				wb, err := f.buffer(f.Outputs, fmt.Sprintf("after%d.%s", k, part.name))
				if err != nil {
					return err
				}
				want, err := decode[float64](wb)
				if err != nil {
					return err
				}
				RequireEqualBits(t, what+": "+part.name, part.got, want)
			}
		}
	}
	return fmt.Errorf("unknown kind %q", f.Kind)
}

// buildGolden runs b on a case's generated inputs and records the outputs.
func buildGolden(b quant.Backend, s goldenSpec) (*GoldenFile, error) {
	in, err := s.gen.generate()
	if err != nil {
		return nil, err
	}
	f := &GoldenFile{Format: GoldenFormat, Name: s.name, Kind: s.kind, Description: s.description, Generator: s.gen}
	l := s.layout
	var shape, gshape []int
	if s.kind != "channelstats" {
		shape, gshape = []int{l.Rows, l.Cols}, []int{l.Rows, l.GroupsPerRow()}
	}
	switch s.kind {
	case "quantize", "groupscales_error":
		f.Layout = goldenLayout(l)
		w := in["w"]
		f.Inputs = []Buffer{encode("w", "f32", shape, w)}
		scales := make([]uint16, l.NumScales())
		err := b.GroupScales(scales, w, l)
		if s.kind == "groupscales_error" {
			f.Kernels, f.Outputs = []string{"GroupScales"}, []Buffer{}
			if err == nil {
				return nil, fmt.Errorf("%s: no error", s.name)
			}
			f.Error, err = goldenError(err)
			return f, err
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", s.name, err)
		}
		f.Kernels = []string{"GroupScales", "Quantize", "Dequantize"}
		packed := make([]byte, l.PackedBytes())
		if err := b.Quantize(packed, w, scales, l); err != nil {
			return nil, err
		}
		deq := make([]float32, l.Elements())
		if err := b.Dequantize(deq, packed, scales, l); err != nil {
			return nil, err
		}
		f.Outputs = []Buffer{
			encode("scales", "f16", gshape, scales),
			encode("packed", packedType(l), shape, packed),
			encode("dequantized", "f32", shape, deq),
		}
	case "matmul":
		f.Layout, f.M, f.Kernels = goldenLayout(l), s.m, []string{"MatMul"}
		scales := make([]uint16, l.NumScales())
		packed := make([]byte, l.PackedBytes())
		if err := b.GroupScales(scales, in["w"], l); err != nil {
			return nil, err
		}
		if err := b.Quantize(packed, in["w"], scales, l); err != nil {
			return nil, err
		}
		y := make([]float32, s.m*l.Rows)
		if err := b.MatMul(y, in["x"], s.m, packed, scales, l); err != nil {
			return nil, err
		}
		f.Inputs = []Buffer{
			encode("x", "f32", []int{s.m, l.Cols}, in["x"]),
			encode("packed", packedType(l), shape, packed),
			encode("scales", "f16", gshape, scales),
		}
		f.Outputs = []Buffer{encode("y", "f32", []int{s.m, l.Rows}, y)}
	case "channelstats":
		f.Channels, f.Kernels = s.channels, []string{"ChannelStats"}
		st := quant.NewStats(s.channels)
		for k, tokens := range s.batches {
			name := fmt.Sprintf("batch%d", k)
			x := in[name]
			if err := b.ChannelStats(st, x, tokens); err != nil {
				return nil, err
			}
			f.Inputs = append(f.Inputs, encode(name, "f32", []int{tokens, s.channels}, x))
			f.Outputs = append(f.Outputs,
				encode(fmt.Sprintf("after%d.count", k), "i64", []int{1}, []int64{st.Count}),
				encode(fmt.Sprintf("after%d.mean", k), "f64", []int{s.channels}, st.Mean),
				encode(fmt.Sprintf("after%d.m2", k), "f64", []int{s.channels}, st.M2),
			)
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", s.kind)
	}
	return f, nil
}

// GoldenFiles generates every golden case with b (the cpu reference) and
// returns the contents of the files by name.
func GoldenFiles(b quant.Backend) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, s := range goldenSpecs() {
		f, err := buildGolden(b, s)
		if err != nil {
			return nil, err
		}
		data, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return nil, err
		}
		out[s.name+".json"] = append(data, '\n')
	}
	return out, nil
}

// WriteGolden regenerates the golden vectors in dir with b, which must be
// the reference backend, and removes stale *.json files.
func WriteGolden(dir string, b quant.Backend) error {
	files, err := GoldenFiles(b)
	if err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, path := range old {
		if _, ok := files[filepath.Base(path)]; !ok {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), files[n], 0o644); err != nil {
			return err
		}
	}
	return nil
}
