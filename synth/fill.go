package synth

import (
	"hash/fnv"
	"math"
	"sync"

	"github.com/mixq/mixq/safetensors"
)

// Generator constants. Changing any of them changes every checkpoint;
// TestFillGolden pins their effect.
const (
	golden = 0x9E3779B97F4A7C15 // 2⁶⁴/φ, the splitmix64 increment

	outlierKey = 0x243F6A8885A308D3 // π: key of the outlier multipliers
	channelKey = 0x13198A2E03707344 // key of the outlier channels

	octaves  = 24 // tail-probability octaves in the quantile table; deeper ones clamp
	segments = 64 // linear segments per octave

	clampT       = 32   // |unit-variance draw| is clamped to this
	outlierBelow = 7    // an element is an outlier when its 16 low hash bits are < 7: 7/65536 ≈ 1.07e-4
	outlierMin   = 10.0 // outlier multiplier range [10, 50)
	outlierSpan  = 40.0
	channelMin   = 4.0 // outlier channel scale range [4, 8)
	channelSpan  = 4.0
	embedScale   = 0.02 // standard deviation of embeddings
	normNoise    = 0.02 // standard deviation of norm weights around 1
	normClamp    = 5.0  // norm noise is clamped to ±5 standard deviations
)

// mix64 is the splitmix64 finaliser (Stafford's variant 13): a bijection on
// uint64 with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// tensorKey is the 64-bit key of the tensor called name under seed.
func tensorKey(seed uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return mix64(mix64(seed+golden) ^ h.Sum64())
}

// frac converts the top 53 bits of h to a float64 uniform on [0, 1).
func frac(h uint64) float64 {
	return float64(int64(h>>11)) * 0x1p-53
}

// segment is one linear piece of the quantile table: the value at the
// segment's start and the change across it.
type segment struct{ base, delta float64 }

// gExp is the biased float64 exponent of g·2⁴⁸ in the top octave,
// g ∈ [1/2, 1).
const gExp = 1023 + 47

// quantiles is the table of |T|/sqrt(2), T ~ Student-t(4), against the
// two-sided tail probability g = P(|T| > t), clamped to 32. Octave e covers
// g ∈ [2^-(e+1), 2^-e) in 64 equal steps of g; segment s of octave e, from
// g = 2^-(e+1)·(1+s/64) to 2^-(e+1)·(1+(s+1)/64), is entry 64e + 63 - s, so
// that the entry is a subtraction away from the bits of the float64 g·2⁴⁸.
var quantiles = sync.OnceValue(func() *[octaves * segments]segment {
	node := func(e, s int) float64 {
		g := math.Ldexp(1+float64(s)/segments, -(e + 1))
		return min(t4Tail(g)/math.Sqrt2, clampT)
	}
	var q [octaves * segments]segment
	for e := range octaves {
		for s := range segments {
			a, b := node(e, s), node(e, s+1)
			q[e*segments+segments-1-s] = segment{a, b - a}
		}
	}
	return &q
})

// t4Tail inverts the two-sided tail of Student-t(4): it returns t ≥ 0 with
// P(|T| > t) = g, for 0 < g ≤ 1. With y = t/sqrt(t²+4) and d = 1-y the tail
// is d²(3-d)/2, increasing in d on [0, 1]; bisection finds d to the last
// bit, and t = 2(1-d)/sqrt(d(2-d)). Only correctly rounded operations are
// used, each product rounded explicitly, so the table is the same on every
// platform.
func t4Tail(g float64) float64 {
	lo, hi := 0.0, 1.0
	for {
		mid := (lo + hi) / 2
		if mid == lo || mid == hi {
			break
		}
		if float64(float64(mid*mid)*(3-mid))/2 < g {
			lo = mid
		} else {
			hi = mid
		}
	}
	d := hi
	return 2 * (1 - d) / math.Sqrt(float64(d*(2-d)))
}

// Fill writes elements [offset, offset+len(dst)) of the standardised draw
// of the tensor called name under seed. Element i depends only on
// (seed, name, i): any chunking, in any order, on any number of goroutines,
// gives the same values. The draw has no shape and no role: it is the unit
// variance Student-t(4) sample, clamped to ±32, with the element outliers
// described in the package documentation, so |value| < 1600. FillTensor
// turns it into weights.
//
// Fill panics if offset is negative.
func Fill(dst []float32, name string, seed uint64, offset int64) {
	if offset < 0 {
		panic("synth: negative offset")
	}
	fill(dst, tensorKey(seed, name), uint64(offset))
}

// fill is Fill for a tensor key. The hash h of element i splits into
//
//	bit 63      the sign
//	bits 16..62 b, giving the tail probability g = (2b+1)/2⁴⁸
//	bits 0..15  the outlier test (< 7)
//
// and |x| is the quantile table interpolated linearly in g. The float64
// g·2⁴⁸ (exact: 48 bits) holds the table entry in its exponent and top six
// mantissa bits, and the position within the segment in the other 46.
func fill(dst []float32, key uint64, offset uint64) {
	const (
		top      = gExp<<6 | (segments - 1) // bits 46..62 of g·2⁴⁸ in segment 0 of the top octave
		fracMask = 1<<46 - 1
		one      = 0x3FF0000000000000 // the bits of 1.0
	)
	q := quantiles()
	z := key + offset*golden
	for j := range dst {
		h := mix64(z)
		z += golden
		gb := math.Float64bits(float64(int64((h>>15)&(1<<48-1) | 1)))
		x := float64(clampT)
		if k := top - gb>>46; k < uint64(len(q)) {
			sg := q[k]
			f := math.Float64frombits(one|(gb&fracMask)<<6) - 1
			x = float64(sg.delta*f) + sg.base
		}
		// x ≥ 0: copy the sign bit of h without a branch, which would be
		// mispredicted half the time.
		x = math.Float64frombits(math.Float64bits(x) ^ h&(1<<63))
		if h&0xFFFF < outlierBelow {
			x = outlier(x, h)
		}
		dst[j] = float32(x)
	}
}

// outlier scales x by a factor in [10, 50) drawn from the element's hash h,
// after raising |x| to at least 1 so that every outlier stands out.
func outlier(x float64, h uint64) float64 {
	m := outlierMin + float64(outlierSpan*frac(mix64(h^outlierKey)))
	return math.Copysign(max(math.Abs(x), 1)*m, x)
}

// Role is how FillTensor shapes a tensor's draw.
type Role uint8

const (
	// Matrix is a weight matrix [..., fan_in]: the draw divided by
	// sqrt(fan_in), with a few outlier input channels (columns) scaled.
	Matrix Role = iota
	// Embedding is a token embedding table: the draw times 0.02.
	Embedding
	// Norm is a vector of norm weights: 1 + 0.02·clamp(draw, ±5).
	Norm
)

// String returns the lower-case name of the role.
func (r Role) String() string {
	switch r {
	case Matrix:
		return "matrix"
	case Embedding:
		return "embedding"
	case Norm:
		return "norm"
	}
	return "role(?)"
}

// RoleOf classifies a tensor: tensors of rank 0 or 1 are Norm, a tensor
// whose name ends in "embed_tokens.weight" is Embedding, and everything
// else is Matrix.
func RoleOf(s safetensors.Spec) Role {
	switch {
	case len(s.Shape) <= 1:
		return Norm
	case hasSuffix(s.Name, "embed_tokens.weight"):
		return Embedding
	}
	return Matrix
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// Channel is one outlier input channel of a matrix.
type Channel struct {
	Column int64   // index along the last (fan-in) dimension
	Scale  float32 // in [4, 8)
}

// Channels returns the outlier input channels of the tensor s under seed,
// in draw order: none for tensors that are not Matrix, otherwise
// min(clamp(fan_in/512, 2, 8), fan_in) distinct columns.
func Channels(s safetensors.Spec, seed uint64) []Channel {
	return channels(s, tensorKey(seed, s.Name))
}

func channels(s safetensors.Spec, key uint64) []Channel {
	if RoleOf(s) != Matrix {
		return nil
	}
	cols := s.Shape[len(s.Shape)-1]
	if cols <= 0 {
		return nil
	}
	out := make([]Channel, 0, min(max(cols/512, 2), 8, cols))
	ckey := mix64(key ^ channelKey)
	for ctr := uint64(0); len(out) < cap(out); ctr += 2 {
		col := int64(mix64(ckey+ctr*golden) % uint64(cols))
		if hasColumn(out, col) {
			continue
		}
		out = append(out, Channel{
			Column: col,
			Scale:  float32(channelMin + float64(channelSpan*frac(mix64(ckey+(ctr+1)*golden)))),
		})
	}
	return out
}

func hasColumn(cs []Channel, col int64) bool {
	for _, c := range cs {
		if c.Column == col {
			return true
		}
	}
	return false
}

// FillTensor writes elements [offset, offset+len(dst)) of the row-major
// tensor s, as Write stores them before rounding to the checkpoint's dtype.
// With x = Fill(s.Name, seed) (float32) and f64 the conversion to float64,
// element i is
//
//	Norm:      float32(1 + 0.02·clamp(f64(x[i]), -5, 5))
//	Embedding: float32(0.02·f64(x[i]))
//	Matrix:    float32(f64(y)/sqrt(fan_in)), where y = float32(f64(x[i])·c)
//	           if column i mod fan_in is the Channel with scale c, else x[i]
//
// Like Fill, the result depends only on (seed, s.Name, s.Shape, i), never
// on the chunking; s.DType is ignored. FillTensor panics if offset is
// negative.
func FillTensor(dst []float32, s safetensors.Spec, seed uint64, offset int64) {
	if offset < 0 {
		panic("synth: negative offset")
	}
	newTensorGen(s, seed).fill(dst, offset)
}

// tensorGen holds what FillTensor derives from the spec and seed, so that
// Write derives it once per tensor rather than once per chunk. It is read
// only and safe for concurrent use.
type tensorGen struct {
	key   uint64
	role  Role
	cols  int64     // fan_in, for Matrix
	scale float64   // 1/sqrt(fan_in), for Matrix
	chans []Channel // for Matrix
}

func newTensorGen(s safetensors.Spec, seed uint64) *tensorGen {
	g := &tensorGen{key: tensorKey(seed, s.Name), role: RoleOf(s)}
	if g.role == Matrix {
		g.cols = s.Shape[len(s.Shape)-1]
		g.scale = 1 / math.Sqrt(float64(g.cols))
		g.chans = channels(s, g.key)
	}
	return g
}

// fill is FillTensor for elements [offset, offset+len(dst)), offset ≥ 0.
func (g *tensorGen) fill(dst []float32, offset int64) {
	fill(dst, g.key, uint64(offset))
	switch g.role {
	case Norm:
		for j, x := range dst {
			dst[j] = float32(1 + float64(normNoise*min(max(float64(x), -normClamp), normClamp)))
		}
	case Embedding:
		for j, x := range dst {
			dst[j] = float32(embedScale * float64(x))
		}
	case Matrix:
		if g.cols <= 0 {
			return // no elements
		}
		for _, c := range g.chans {
			// The first element at or after offset in column c.Column.
			j := c.Column - offset%g.cols
			if j < 0 {
				j += g.cols
			}
			for ; j < int64(len(dst)); j += g.cols {
				dst[j] = float32(float64(dst[j]) * float64(c.Scale))
			}
		}
		for j, x := range dst {
			dst[j] = float32(float64(x) * g.scale)
		}
	}
}
