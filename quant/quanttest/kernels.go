package quanttest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/mixq/mixq/quant"
)

// pair runs every kernel on the backend under test and on the reference,
// with guarded, differently pre-filled outputs, and compares the results.
type pair struct {
	b, ref quant.Backend
}

func name(l quant.Layout) string {
	return fmt.Sprintf("%s g%d %dx%d", l.Precision, l.GroupSize, l.Rows, l.Cols)
}

// unchanged fails t if a kernel modified one of its inputs.
func unchanged[E Element](t testing.TB, what string, before, after []E) {
	t.Helper()
	if msg := DiffBits(after, before); msg != "" {
		t.Fatalf("%s modified its input: %s", what, msg)
	}
}

// groupScales compares GroupScales and returns the reference's scales and error.
func (p pair) groupScales(t testing.TB, what string, w []float32, l quant.Layout) ([]uint16, error) {
	t.Helper()
	what = fmt.Sprintf("%s: GroupScales %s", what, name(l))
	w0 := slices.Clone(w)
	got, want := testU16(l.NumScales()), refU16(l.NumScales())
	gerr := call(t, what, func() error { return p.b.GroupScales(got.In, w, l) })
	werr := p.ref.GroupScales(want.In, w, l)
	got.Check(t, what)
	want.Check(t, what+" (reference)")
	unchanged(t, what, w0, w)
	RequireSameError(t, what, gerr, werr)
	if werr == nil {
		RequireEqualBits(t, what+": scales", got.In, want.In)
	}
	return want.In, werr
}

// quantize compares Quantize and returns the reference's codes.
func (p pair) quantize(t testing.TB, what string, w []float32, scales []uint16, l quant.Layout) []byte {
	t.Helper()
	what = fmt.Sprintf("%s: Quantize %s", what, name(l))
	w0, s0 := slices.Clone(w), slices.Clone(scales)
	got, want := testU8(l.PackedBytes()), refU8(l.PackedBytes())
	gerr := call(t, what, func() error { return p.b.Quantize(got.In, w, scales, l) })
	werr := p.ref.Quantize(want.In, w, scales, l)
	got.Check(t, what)
	want.Check(t, what+" (reference)")
	unchanged(t, what, w0, w)
	unchanged(t, what, s0, scales)
	if werr != nil {
		t.Fatalf("%s: reference failed: %v", what, werr)
	}
	RequireSameError(t, what, gerr, nil)
	RequireEqualBits(t, what+": packed", got.In, want.In)
	return want.In
}

// dequantize compares Dequantize and returns the reference's values.
func (p pair) dequantize(t testing.TB, what string, packed []byte, scales []uint16, l quant.Layout) []float32 {
	t.Helper()
	what = fmt.Sprintf("%s: Dequantize %s", what, name(l))
	p0, s0 := slices.Clone(packed), slices.Clone(scales)
	got, want := testF32(l.Elements()), refF32(l.Elements())
	gerr := call(t, what, func() error { return p.b.Dequantize(got.In, packed, scales, l) })
	werr := p.ref.Dequantize(want.In, packed, scales, l)
	got.Check(t, what)
	want.Check(t, what+" (reference)")
	unchanged(t, what, p0, packed)
	unchanged(t, what, s0, scales)
	if werr != nil {
		t.Fatalf("%s: reference failed: %v", what, werr)
	}
	RequireSameError(t, what, gerr, nil)
	RequireEqualBits(t, what+": w", got.In, want.In)
	return want.In
}

// matMul compares MatMul and returns the reference's y.
func (p pair) matMul(t testing.TB, what string, x []float32, m int, packed []byte, scales []uint16, l quant.Layout) []float32 {
	t.Helper()
	what = fmt.Sprintf("%s: MatMul m=%d %s", what, m, name(l))
	x0, p0, s0 := slices.Clone(x), slices.Clone(packed), slices.Clone(scales)
	got, want := testF32(m*l.Rows), refF32(m*l.Rows)
	gerr := call(t, what, func() error { return p.b.MatMul(got.In, x, m, packed, scales, l) })
	werr := p.ref.MatMul(want.In, x, m, packed, scales, l)
	got.Check(t, what)
	want.Check(t, what+" (reference)")
	unchanged(t, what, x0, x)
	unchanged(t, what, p0, packed)
	unchanged(t, what, s0, scales)
	if werr != nil {
		t.Fatalf("%s: reference failed: %v", what, werr)
	}
	RequireSameError(t, what, gerr, nil)
	RequireEqualBits(t, what+": y", got.In, want.In)
	return want.In
}

// statsPair is the running statistics of both backends, kept in guarded
// buffers.
type statsPair struct {
	channels           int
	gm, gm2, wm, wm2   *Guarded[float64]
	got, want          *quant.Stats
	batches, numTokens int
}

func newStatsPair(channels int) *statsPair {
	s := &statsPair{channels: channels}
	s.gm, s.gm2 = testF64(channels), testF64(channels)
	s.wm, s.wm2 = testF64(channels), testF64(channels)
	for _, g := range []*Guarded[float64]{s.gm, s.gm2, s.wm, s.wm2} {
		clear(g.In) // NewStats starts from zeros
	}
	s.got = &quant.Stats{Mean: s.gm.In, M2: s.gm2.In}
	s.want = &quant.Stats{Mean: s.wm.In, M2: s.wm2.In}
	return s
}

// channelStats merges one batch into both and compares.
func (p pair) channelStats(t testing.TB, what string, s *statsPair, x []float32, tokens int) {
	t.Helper()
	s.batches++
	s.numTokens += tokens
	what = fmt.Sprintf("%s: ChannelStats %d channels, batch %d of %d tokens", what, s.channels, s.batches, tokens)
	x0 := slices.Clone(x)
	gerr := call(t, what, func() error { return p.b.ChannelStats(s.got, x, tokens) })
	werr := p.ref.ChannelStats(s.want, x, tokens)
	for _, g := range []*Guarded[float64]{s.gm, s.gm2, s.wm, s.wm2} {
		g.Check(t, what)
	}
	unchanged(t, what, x0, x)
	if werr != nil {
		t.Fatalf("%s: reference failed: %v", what, werr)
	}
	RequireSameError(t, what, gerr, nil)
	if s.got.Count != s.want.Count || s.want.Count != int64(s.numTokens) {
		t.Fatalf("%s: Count %d, reference %d, tokens so far %d", what, s.got.Count, s.want.Count, s.numTokens)
	}
	if len(s.got.Mean) != s.channels || len(s.got.M2) != s.channels ||
		&s.got.Mean[0] != &s.gm.In[0] || &s.got.M2[0] != &s.gm2.In[0] {
		t.Fatalf("%s: the backend replaced the Mean or M2 slices instead of updating them", what)
	}
	RequireEqualBits(t, what+": Mean", s.got.Mean, s.want.Mean)
	RequireEqualBits(t, what+": M2", s.got.M2, s.want.M2)
}
