package quanttest

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mixq/mixq/quant"
)

// SeedEnv names the environment variable that fixes the random seed.
const SeedEnv = "MIXQ_SEED"

var seedOnce = sync.OnceValue(func() uint64 {
	if s := os.Getenv(SeedEnv); s != "" {
		if v, err := strconv.ParseUint(s, 0, 64); err == nil {
			return v
		}
	}
	return uint64(time.Now().UnixNano())
})

// Seed returns the seed of this test process: $MIXQ_SEED when set, else the
// time. It logs it on t so that a failure can be reproduced.
func Seed(t testing.TB) uint64 {
	t.Helper()
	s := seedOnce()
	t.Logf("random seed %d (reproduce with %s=%d)", s, SeedEnv, s)
	return s
}

// NewRand returns a generator for one test case: the run's seed combined
// with a label naming the case, so that every case draws its own stream
// whatever runs before it.
func NewRand(seed uint64, label string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(label))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// pow2 is 2^e as a float64.
func pow2(e int) float64 { return math.Ldexp(1, e) }

// Weights returns l.Rows×l.Cols finite values in which every group of the
// layout draws from a random one of: uniform and normal values of random
// magnitude, a heavy tail with outliers, all ±0, binary32 subnormals, an
// absolute maximum that makes the scale a binary16 subnormal (where the
// clamp of Code matters), exact rounding ties on a power-of-two scale, a
// constant, and magnitudes close to the binary16 scale limit. −0 and
// subnormals are also sprinkled into the other groups.
func Weights(r *rand.Rand, l quant.Layout) []float32 {
	w := make([]float32, l.Elements())
	qmax := float64(l.Precision.QMax())
	for row := range l.Rows {
		x := w[row*l.Cols : (row+1)*l.Cols]
		for g := range l.GroupsPerRow() {
			lo, hi := l.Group(g)
			fillGroup(r, x[lo:hi], qmax)
		}
	}
	return w
}

func fillGroup(r *rand.Rand, x []float32, qmax float64) {
	sign := func() float64 {
		if r.IntN(2) == 0 {
			return -1
		}
		return 1
	}
	switch k := r.IntN(18); {
	case k < 3: // uniform
		m := pow2(r.IntN(33) - 16)
		for i := range x {
			x[i] = float32((2*r.Float64() - 1) * m)
		}
	case k < 6: // normal
		m := pow2(r.IntN(17) - 12)
		for i := range x {
			x[i] = float32(r.NormFloat64() * m)
		}
	case k < 8: // heavy tail: normal / sqrt(uniform), with outliers
		m := pow2(r.IntN(9) - 8)
		for i := range x {
			v := r.NormFloat64() / math.Sqrt(r.Float64()+1e-9)
			if r.IntN(50) == 0 {
				v *= 100 + 900*r.Float64()
			}
			x[i] = float32(v * m)
		}
	case k < 9: // ±0
		for i := range x {
			x[i] = float32(math.Copysign(0, sign()))
		}
	case k < 10: // binary32 subnormals
		for i := range x {
			b := uint32(r.IntN(0x7fffff) + 1)
			if r.IntN(2) == 0 {
				b |= 0x80000000
			}
			x[i] = math.Float32frombits(b)
		}
	case k < 12: // the scale is a binary16 subnormal (or underflows to 0)
		amax := qmax * pow2(-26) * math.Pow(2, 13*r.Float64())
		for i := range x {
			x[i] = float32((2*r.Float64() - 1) * amax)
		}
		x[r.IntN(len(x))] = float32(sign() * amax)
	case k < 14: // exact ties on the power-of-two scale s = 2^e
		e := r.IntN(39) - 24
		s := pow2(e)
		for i := range x {
			n := float64(r.IntN(2*int(qmax)) - int(qmax)) // in [-qmax, qmax-1]
			if r.IntN(4) == 0 {
				x[i] = float32(n * s)
			} else {
				x[i] = float32((n + 0.5) * s)
			}
		}
		x[r.IntN(len(x))] = float32(sign() * qmax * s)
	case k < 15: // constant
		c := float32(sign() * r.ExpFloat64())
		for i := range x {
			x[i] = c
		}
	case k < 16: // close to the scale limit, but under it
		amax := qmax * (1024 + (65504-1024)*r.Float64())
		for i := range x {
			x[i] = float32((2*r.Float64() - 1) * amax)
		}
		x[r.IntN(len(x))] = float32(sign() * amax)
	default: // small integers (exact codes on scale 1 when qmax is reached)
		for i := range x {
			x[i] = float32(r.IntN(2*int(qmax)+1) - int(qmax))
		}
	}
	// Sprinkle −0 and subnormals.
	for i := range x {
		switch r.IntN(64) {
		case 0:
			x[i] = float32(math.Copysign(0, -1))
		case 1:
			x[i] = math.Float32frombits(uint32(r.IntN(0x7fffff)+1) | uint32(r.IntN(2))<<31)
		}
	}
}

// Activations returns tokens×channels finite values, row-major, in which
// every channel has its own offset, spread and kind: normal, heavy-tailed,
// constant, all ±0, subnormal, or a large offset with a small spread (which
// stresses the cancellation that Welford's update avoids).
func Activations(r *rand.Rand, tokens, channels int) []float32 {
	x := make([]float32, tokens*channels)
	for c := range channels {
		kind := r.IntN(8)
		off := []float64{0, 0, 1, -3, 1e3, -2.5e4, 1e6, 0}[r.IntN(8)]
		m := pow2(r.IntN(16) - 10)
		k := float32(r.NormFloat64())
		for t := range tokens {
			var v float64
			switch kind {
			case 0, 1, 2:
				v = off + m*r.NormFloat64()
			case 3: // heavy tail
				v = off + m*r.NormFloat64()/math.Sqrt(r.Float64()+1e-9)
			case 4:
				x[t*channels+c] = k
				continue
			case 5:
				x[t*channels+c] = float32(math.Copysign(0, float64(r.IntN(2)*2-1)))
				continue
			case 6:
				x[t*channels+c] = math.Float32frombits(uint32(r.IntN(0x7fffff)+1) | uint32(r.IntN(2))<<31)
				continue
			default:
				v = off + m*(2*r.Float64()-1)
			}
			x[t*channels+c] = float32(v)
		}
	}
	return x
}

// Codes returns random packed codes for l, every byte value included (so
// INT8 gets −128 and INT4 gets −8, which Quantize never writes, and the pad
// nibble of odd INT4 rows is junk that kernels must ignore).
func Codes(r *rand.Rand, l quant.Layout) []byte {
	p := make([]byte, l.PackedBytes())
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// Scales returns random non-negative finite binary16 scales for l: zeros,
// subnormals and normal values up to maxBits.
func Scales(r *rand.Rand, l quant.Layout, maxBits uint16) []uint16 {
	s := make([]uint16, l.NumScales())
	for i := range s {
		switch r.IntN(16) {
		case 0:
			s[i] = 0
		case 1:
			s[i] = uint16(r.IntN(0x3ff) + 1)
		default:
			s[i] = uint16(r.IntN(int(maxBits)) + 1)
		}
	}
	return s
}
