package importance

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// requireSameStats compares statistics bit for bit and names the first difference.
func requireSameStats(t *testing.T, want, got *CalibStats) {
	t.Helper()
	require.Equal(t, want.Names(), got.Names())
	for _, n := range want.Names() {
		w, g := want.Layers[n], got.Layers[n]
		require.Equal(t, w.Count, g.Count, n)
		require.Equal(t, w.Channels(), g.Channels(), n)
		for c := range w.Mean {
			if math.Float64bits(w.Mean[c]) != math.Float64bits(g.Mean[c]) || math.Float64bits(w.M2[c]) != math.Float64bits(g.M2[c]) {
				t.Fatalf("layer %s channel %d: mean %v vs %v, M2 %v vs %v", n, c, w.Mean[c], g.Mean[c], w.M2[c], g.M2[c])
			}
		}
	}
}

// batches splits x [tokens, in] into consecutive batches of the given sizes.
func batches(x []float32, in int, sizes ...int) [][]float32 {
	var out [][]float32
	at := 0
	for _, s := range sizes {
		out = append(out, x[at*in:(at+s)*in])
		at += s
	}
	return out
}

func TestCalibrationStreamingMerge(t *testing.T) {
	be := cpu.New(0)
	const in = 37
	x := randTensor("a", 11, 2, 100, in).data
	for i := range x {
		x[i] += float32(i%in) * 0.25 // channel means differ
	}
	sizes := []int{1, 30, 7, 62}

	// Streaming through Observe.
	c := Start(be)
	for i, b := range batches(x, in, sizes...) {
		require.NoError(t, c.Observe("layer", b, sizes[i], in))
	}
	require.NoError(t, c.Observe("layer", nil, 0, in)) // an empty batch is a no-op
	got, err := c.End()
	require.NoError(t, err)

	// The same batches reduced one by one and merged in the same order.
	want := NewCalibStats()
	want.Layers["layer"] = quant.NewStats(in)
	for i, b := range batches(x, in, sizes...) {
		bs := quant.NewStats(in)
		require.NoError(t, be.ChannelStats(bs, b, sizes[i]))
		require.NoError(t, want.Layers["layer"].Merge(bs))
	}
	requireSameStats(t, want, got)

	// Two calibrations over halves, merged, equal one over both in order.
	c1, c2 := Start(be), Start(be)
	bs := batches(x, in, sizes...)
	require.NoError(t, c1.Observe("layer", bs[0], sizes[0], in))
	require.NoError(t, c1.Observe("layer", bs[1], sizes[1], in))
	require.NoError(t, c2.Observe("layer", bs[2], sizes[2], in))
	require.NoError(t, c2.Observe("layer", bs[3], sizes[3], in))
	s1, err := c1.End()
	require.NoError(t, err)
	s2, err := c2.End()
	require.NoError(t, err)
	require.NoError(t, s1.Merge(s2))
	c3 := Start(be)
	require.NoError(t, c3.Observe("layer", bs[0], sizes[0], in))
	require.NoError(t, c3.Observe("layer", bs[1], sizes[1], in))
	half1, _ := c3.End()
	c4 := Start(be)
	require.NoError(t, c4.Observe("layer", bs[2], sizes[2], in))
	require.NoError(t, c4.Observe("layer", bs[3], sizes[3], in))
	half2, _ := c4.End()
	require.NoError(t, half1.Layers["layer"].Merge(half2.Layers["layer"]))
	requireSameStats(t, half1, s1)

	// One shot over all tokens agrees to rounding.
	one := quant.NewStats(in)
	require.NoError(t, be.ChannelStats(one, x, 100))
	g := got.Layers["layer"]
	assert.Equal(t, one.Count, g.Count)
	for ch := range one.Mean {
		assert.InDelta(t, one.Mean[ch], g.Mean[ch], 1e-12*(1+math.Abs(one.Mean[ch])))
		assert.InDelta(t, one.M2[ch], g.M2[ch], 1e-10*(1+one.M2[ch]))
	}
}

func TestCalibrationErrors(t *testing.T) {
	c := Start(nil)
	require.NoError(t, c.Observe("a", make([]float32, 8), 2, 4))
	assert.ErrorIs(t, c.Observe("a", make([]float32, 6), 2, 3), quant.ErrInput) // channels changed
	assert.Error(t, c.Observe("a", make([]float32, 7), 2, 4))
	assert.Error(t, c.Observe("", make([]float32, 4), 1, 4))
	assert.Error(t, c.Observe("a", nil, 1, 0))
	_, err := c.End()
	require.NoError(t, err)
	assert.Error(t, c.Observe("a", make([]float32, 4), 1, 4))
	_, err = c.End()
	assert.Error(t, err)
}

func TestReadActivationsStreams(t *testing.T) {
	be := cpu.New(0)
	dir := t.TempDir()
	// Wide enough that a file holds several batches of BatchElements.
	const in = 1 << 16
	const tokens = 40
	per := BatchElements / in
	require.Less(t, per, tokens)
	big := randTensor("model.layers.0.mlp.down_proj", 21, 1, tokens, in)
	small := randTensor("model.layers.0.self_attn.q_proj", 22, 1, 5, 16)
	p1 := filepath.Join(dir, "a.safetensors")
	p2 := filepath.Join(dir, "b.safetensors")
	writeF32(t, p1, map[string]string{CalibrationKey: ActivationsFormat}, big, small)
	writeF32(t, p2, nil, randTensor("model.layers.0.self_attn.q_proj", 23, 1, 3, 16))

	got, err := ReadActivations([]string{p1, p2}, be)
	require.NoError(t, err)

	c := Start(be)
	for r := 0; r < tokens; r += per {
		n := min(per, tokens-r)
		require.NoError(t, c.Observe(big.name, big.data[r*in:(r+n)*in], n, in))
	}
	require.NoError(t, c.Observe(small.name, small.data, 5, 16))
	second := randTensor("x", 23, 1, 3, 16)
	require.NoError(t, c.Observe(small.name, second.data, 3, 16))
	want, _ := c.End()
	requireSameStats(t, want, got)
	assert.Equal(t, int64(8), got.Layers[small.name].Count)

	// Statistics file round trip: bit-identical, and readable by Read too.
	sp := filepath.Join(dir, "stats.safetensors")
	require.NoError(t, got.Write(sp))
	back, err := ReadStats(sp)
	require.NoError(t, err)
	requireSameStats(t, got, back)
	both, err := Read([]string{sp}, be)
	require.NoError(t, err)
	requireSameStats(t, got, both)

	// Read mixes kinds in order: stats of file a, then activations of b.
	sa, err := ReadActivations([]string{p1}, be)
	require.NoError(t, err)
	sap := filepath.Join(dir, "a-stats.safetensors")
	require.NoError(t, sa.Write(sap))
	mixed, err := Read([]string{sap, p2}, be)
	require.NoError(t, err)
	requireSameStats(t, got, mixed)

	// Kinds are not confused.
	_, err = ReadActivations([]string{sp}, be)
	assert.ErrorIs(t, err, quant.ErrInput)
	_, err = ReadStats(p1)
	assert.ErrorIs(t, err, quant.ErrInput)
	bad := filepath.Join(dir, "bad.safetensors")
	writeF32(t, bad, nil, tensor{"x", []int64{2, 2, 2}, make([]float32, 8)})
	_, err = ReadActivations([]string{bad}, be)
	assert.ErrorIs(t, err, quant.ErrInput)
}

func TestSecondMoment(t *testing.T) {
	c := Start(nil)
	require.NoError(t, c.Observe("a", []float32{1, -2, 3, 2}, 2, 2))
	s, _ := c.End()
	// channel 0: {1, 3}: mean 2, var 1, E[x²] 5; channel 1: {-2, 2}: E[x²] 4.
	assert.InDeltaSlice(t, []float64{5, 4}, s.SecondMoment("a"), 1e-12)
	assert.Nil(t, s.SecondMoment("b"))
}
