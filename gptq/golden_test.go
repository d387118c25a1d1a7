package gptq

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

// goldenCase is one fixed problem whose result's hash was recorded with the
// dense implementation (every matrix K×K, before the packed storage):
// the storage may change, the bytes chosen may not.
type goldenCase struct {
	name               string
	rows, k, g, tokens int
	p                  quant.Precision
	search             bool
	dead               bool   // channels 3..9 never fire
	special            string // "zero": H = 0; "indefinite": retried, then H = I
	want               string
}

var goldenCases = []goldenCase{
	{"int4 g32 search", 24, 96, 32, 400, quant.INT4, true, false, "", "5be7798aff25b9fa"},
	{"int4 g128 ragged", 11, 300, 128, 500, quant.INT4, false, false, "", "5c94036fd2559f8c"},
	{"int8 g16", 9, 64, 16, 200, quant.INT8, true, false, "", "5f98cba55cf95715"},
	{"few tokens", 7, 160, 32, 40, quant.INT4, true, false, "", "dcb25a4499bdc49f"},
	{"dead channels", 10, 72, 24, 150, quant.INT4, true, true, "", "2c020f928dbf547f"},
	{"k over block", 5, 520, 64, 600, quant.INT4, true, false, "", "9633bba6022926e5"},
	{"zero H", 6, 64, 32, 100, quant.INT4, true, false, "zero", "58819f37c8cb49c6"},
	{"indefinite H", 6, 64, 32, 100, quant.INT4, false, false, "indefinite", "2a9152ea610822e0"},
}

// hashResult digests everything Quantize decides: scales, dequantized
// weights, the rows per method and both losses.
func hashResult(res *Result) string {
	h := sha256.New()
	var b [8]byte
	for _, s := range res.Scales {
		binary.LittleEndian.PutUint16(b[:2], s)
		h.Write(b[:2])
	}
	for _, v := range res.W {
		binary.LittleEndian.PutUint32(b[:4], math.Float32bits(v))
		h.Write(b[:4])
	}
	for _, n := range res.Rows {
		binary.LittleEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	for _, v := range []float64{res.Loss, res.LossRTN} {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func goldenProblem(c goldenCase) ([]float32, []float64, quant.Layout) {
	rng := rand.New(rand.NewPCG(uint64(c.rows), uint64(c.k)))
	x := correlated(rng, c.tokens, c.k)
	if c.dead {
		for t := range c.tokens {
			for ch := 3; ch < 10; ch++ {
				x[t*c.k+ch] = 0
			}
		}
	}
	m := NewMoment(c.k)
	if err := m.Add(x, c.tokens, 2); err != nil {
		panic(err)
	}
	h := m.Mean()
	switch c.special {
	case "zero":
		clear(h)
	case "indefinite":
		clear(h)
		for i := range c.k {
			h[i*c.k+i] = 1
			if i+1 < c.k {
				h[i*c.k+i+1], h[(i+1)*c.k+i] = 5, 5
			}
		}
	}
	return randomWeights(rng, c.rows*c.k), h, quant.Layout{Rows: c.rows, Cols: c.k, GroupSize: c.g, Precision: c.p}
}

// The results are the dense implementation's, bit for bit, through the
// tiled loop and the per-row reference, at 1 and 2 workers.
func TestGoldenResults(t *testing.T) {
	for _, c := range goldenCases {
		w, h, l := goldenProblem(c)
		for _, o := range []Options{{Workers: 1}, {Workers: 2}, {Workers: 1, reference: true}} {
			o.Search = c.search
			res, err := Quantize(w, l, h, int64(c.tokens), o)
			require.NoError(t, err, c.name)
			got := hashResult(res)
			t.Logf("%s %+v: %s", c.name, o, got)
			assert.Equal(t, c.want, got, "%s %+v", c.name, o)
		}
	}
}

// Sequential on minillama's first two layers gives the dense
// implementation's bytes (H shared by q/k/v and gate/up, one stage at a
// time).
func TestGoldenSequential(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs minillama's calibration (a few seconds)")
	}
	seqs := calibSeqs(t, requireMinillama(t), 2, 32)
	m := loadMinillama(t)
	tg := targets(m, 32)
	res, err := Sequential(context.Background(), m, seqs, CalibOptions{
		Options: Options{Search: true},
		Target: func(name string) (quant.Layout, bool) {
			if name == "model.layers.0.self_attn.q_proj.weight" || name == "model.layers.0.self_attn.k_proj.weight" ||
				name == "model.layers.0.self_attn.v_proj.weight" || name == "model.layers.0.self_attn.o_proj.weight" ||
				name == "model.layers.1.mlp.gate_proj.weight" || name == "model.layers.1.mlp.up_proj.weight" ||
				name == "model.layers.1.mlp.down_proj.weight" {
				return tg(name)
			}
			return quant.Layout{}, false
		},
	})
	require.NoError(t, err)
	names := make([]string, 0, len(res))
	for n := range res {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		r := res[n]
		h.Write([]byte(n))
		for _, s := range r.Scales {
			h.Write([]byte{byte(s), byte(s >> 8)})
		}
		h.Write(r.Packed)
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(r.Loss))
		h.Write(b[:])
	}
	got := hex.EncodeToString(h.Sum(nil))[:16]
	t.Logf("sequential: %s (%d matrices)", got, len(names))
	assert.Len(t, names, 7)
	assert.Equal(t, "ff1aaf75fee48baf", got)
}
