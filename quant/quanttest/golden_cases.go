package quanttest

import (
	"fmt"
	"math"

	"github.com/mixq/mixq/quant"
)

// The golden cases: what each pins is in its description, which is written
// into the file; testdata/golden/README.md lists them.

// goldenSpec describes one golden case before it is run.
type goldenSpec struct {
	name, kind, description string
	layout                  quant.Layout
	m, channels             int
	batches                 []int // channelstats: tokens per batch
	gen                     Generator
}

func gen(seed uint64, bufs ...GenBuffer) Generator {
	return Generator{Algorithm: "splitmix64-uniform-v1", Seed: seed, Buffers: bufs}
}

func fill(first, count, stride int, bits uint32) Edit {
	return Edit{Op: "fill", First: first, Count: count, Stride: stride, Bits: fmt.Sprintf("%08x", bits)}
}

func goldenSpecs() []goldenSpec {
	const negZero, nan, sNaN, inf = 0x80000000, 0x7fc00000, 0x7fa00001, 0x7f800000
	q8 := func(r, c, g int) quant.Layout {
		return quant.Layout{Rows: r, Cols: c, GroupSize: g, Precision: quant.INT8}
	}
	q4 := func(r, c, g int) quant.Layout {
		return quant.Layout{Rows: r, Cols: c, GroupSize: g, Precision: quant.INT4}
	}
	return []goldenSpec{
		{
			name: "quantize_int8_g128_3x172", kind: "quantize", layout: q8(3, 172, 128),
			description: "Ragged rows (groups of 128 and 44). Row 1 group 1 is all zero with a -0 (scale 0, codes 0, " +
				"dequantized +0); -0 at index 5; row 2 group 0 is all binary32 subnormals (scale bumped to 0x0001); " +
				"three subnormals at 20..22; an outlier ×128 at index 100.",
			gen: gen(1, GenBuffer{Name: "w", Count: 3 * 172, Multiplier: 1, Edits: []Edit{
				fill(300, 44, 1, 0), fill(310, 1, 1, negZero), fill(5, 1, 1, negZero),
				{Op: "subnormal", First: 344, Count: 128}, {Op: "subnormal", First: 20, Count: 3},
				{Op: "scale", First: 100, Count: 1, Factor: 128},
			}}),
		},
		{
			name: "quantize_int8_g64_4x300", kind: "quantize", layout: q8(4, 300, 64),
			description: "Ragged rows (4 groups of 64 and one of 44). Row 1 groups 0 and 1 and row 2 group 4 are tiny, " +
				"so their scales are binary16 subnormals; index 301 holds 189.25·2^-24, so row 1 group 0 gets the scale " +
				"2^-24 (s32 = 1.49·2^-24 rounds down) and that element's v = 189.25 is clamped to 127; row 2 group 1 holds " +
				"exact rounding ties on the scale 2^-3; row 3 group 4 is all zero; -0 at index 7.",
			gen: gen(2, GenBuffer{Name: "w", Count: 4 * 300, Multiplier: 0.125, Edits: []Edit{
				{Op: "scale", First: 300, Count: 64, Factor: 0x1p-14}, {Op: "scale", First: 364, Count: 64, Factor: 0x1p-17},
				{Op: "scale", First: 856, Count: 44, Factor: 0x1p-12}, fill(301, 1, 1, math.Float32bits(189.25*0x1p-24)),
				{Op: "ties", First: 664, Count: 64, Exp: -3, QMax: 127},
				fill(1156, 44, 1, 0), fill(7, 1, 1, negZero),
			}}),
		},
		{
			name: "quantize_int4_g64_4x300", kind: "quantize", layout: q4(4, 300, 64),
			description: "INT4 version of quantize_int8_g64_4x300 with its own seed: subnormal scales in row 1 groups 0 " +
				"and 1 and row 2 group 4 (index 365 = 10.25·2^-24 makes row 1 group 1's scale 2^-24 and is clamped from " +
				"10.25 to 7), ties on the scale 2^-1 in row 2 group 1, row 3 group 4 all zero, -0 at 7.",
			gen: gen(3, GenBuffer{Name: "w", Count: 4 * 300, Multiplier: 1, Edits: []Edit{
				{Op: "scale", First: 300, Count: 64, Factor: 0x1p-20}, {Op: "scale", First: 364, Count: 64, Factor: 0x1p-22},
				{Op: "scale", First: 856, Count: 44, Factor: 0x1p-19}, fill(365, 1, 1, math.Float32bits(10.25*0x1p-24)),
				{Op: "ties", First: 664, Count: 64, Exp: -1, QMax: 7},
				fill(1156, 44, 1, 0), fill(7, 1, 1, negZero),
			}}),
		},
		{
			name: "quantize_int4_g32_3x77", kind: "quantize", layout: q4(3, 77, 32),
			description: "Odd Cols: each row is 39 bytes and its last high nibble is 0. Row 0 group 1 is all zero with " +
				"-0s, row 1 group 2 (13 elements) is subnormal, row 2 group 0 holds ties on the scale 2^-24 (itself a " +
				"binary16 subnormal).",
			gen: gen(4, GenBuffer{Name: "w", Count: 3 * 77, Multiplier: 4, Edits: []Edit{
				fill(32, 32, 1, 0), fill(33, 8, 4, negZero), {Op: "subnormal", First: 77 + 64, Count: 13},
				{Op: "ties", First: 154, Count: 32, Exp: -24, QMax: 7},
			}}),
		},
		{
			name: "quantize_int4_g7_2x23", kind: "quantize", layout: q4(2, 23, 7),
			description: "Odd group size: a byte can hold codes of two groups with different scales. Row 1 group 0 is " +
				"multiplied by 2^10.",
			gen: gen(5, GenBuffer{Name: "w", Count: 2 * 23, Multiplier: 1, Edits: []Edit{
				{Op: "scale", First: 23, Count: 7, Factor: 1024},
			}}),
		},
		{
			name: "groupscales_nonfinite", kind: "groupscales_error", layout: q8(3, 100, 64),
			description: "A scale overflow in row 0 group 0 (3e38 at index 3) and non-finite values at 40 (a signalling " +
				"NaN with payload), 41 (+Inf) and 150 (NaN): the error is NonFiniteError at the lowest index, 40, " +
				"with the value's bits unchanged; non-finite values take precedence over overflows.",
			gen: gen(6, GenBuffer{Name: "w", Count: 300, Multiplier: 1, Edits: []Edit{
				fill(3, 1, 1, math.Float32bits(3e38)), fill(40, 1, 1, sNaN), fill(41, 1, 1, inf), fill(150, 1, 1, nan),
			}}),
		},
		{
			name: "groupscales_overflow", kind: "groupscales_error", layout: q4(2, 100, 64),
			description: "INT4 scale limit: 458640 = 65520·7 overflows (65520 is the tie between 65504 and 65536, " +
				"which rounds to even, +Inf). Index 90 (row 0 group 1) holds the largest absmax that fits " +
				"(458639.97, scale 0x7bff); row 1 group 0 holds 458640 at index 130 and row 1 group 1 holds -1e30: " +
				"the error is ScaleOverflowError at row 1 group 0 with absmax 458640.",
			gen: gen(7, GenBuffer{Name: "w", Count: 200, Multiplier: 1, Edits: []Edit{
				fill(90, 1, 1, math.Float32bits(math.Nextafter32(458640, 0))), fill(130, 1, 1, math.Float32bits(458640)),
				fill(190, 1, 1, math.Float32bits(-1e30)),
			}}),
		},
		{
			name: "matmul_int8_g128_m1", kind: "matmul", layout: q8(6, 300, 128), m: 1,
			description: "y = x·Wᵀ with m = 1; W is 6×300 in groups of 128, 128 and 44 (the GroupScales and Quantize of " +
				"the generated w, which is not stored).",
			gen: gen(8, GenBuffer{Name: "w", Count: 6 * 300, Multiplier: 1, Note: "quantized into packed and scales"},
				GenBuffer{Name: "x", Count: 300, Multiplier: 2}),
		},
		{
			name: "matmul_int8_g8_m5", kind: "matmul", layout: q8(3, 300, 8), m: 5,
			description: "m = 5; 38 groups per row, so groups 32..37 wrap onto lanes 0..5 before the fold.",
			gen: gen(9, GenBuffer{Name: "w", Count: 3 * 300, Multiplier: 1, Note: "quantized into packed and scales"},
				GenBuffer{Name: "x", Count: 5 * 300, Multiplier: 1, Edits: []Edit{{Op: "add", First: 0, Count: 300, Value: 100}}}),
		},
		{
			name: "matmul_int4_g64_m5", kind: "matmul", layout: q4(4, 300, 64), m: 5,
			description: "INT4, m = 5, ragged rows (4 groups of 64 and one of 44).",
			gen: gen(10, GenBuffer{Name: "w", Count: 4 * 300, Multiplier: 1, Note: "quantized into packed and scales"},
				GenBuffer{Name: "x", Count: 5 * 300, Multiplier: 1}),
		},
		{
			name: "matmul_int4_g4_m1", kind: "matmul", layout: q4(3, 301, 4), m: 1,
			description: "INT4, m = 1, odd Cols (the pad nibble is 0) and 76 groups per row (lanes wrap twice).",
			gen: gen(11, GenBuffer{Name: "w", Count: 3 * 301, Multiplier: 1, Note: "quantized into packed and scales"},
				GenBuffer{Name: "x", Count: 301, Multiplier: 0.5}),
		},
		{
			name: "channelstats_2batches", kind: "channelstats", channels: 6, batches: []int{5, 1},
			description: "Two batches of 5 and 1 tokens over 6 channels, merged into empty statistics: the first " +
				"merge copies, the second is Chan's update with a 1-token batch. Channel 1 has an offset of 1000, " +
				"channel 2 is constant -0.5 with one -0 (token 3), channel 4 holds subnormals.",
			gen: gen(12,
				GenBuffer{Name: "batch0", Count: 5 * 6, Multiplier: 1, Edits: []Edit{
					{Op: "add", First: 1, Count: 5, Stride: 6, Value: 1000}, fill(2, 5, 6, math.Float32bits(-0.5)),
					fill(2+3*6, 1, 1, negZero), {Op: "subnormal", First: 4, Count: 5, Stride: 6},
				}},
				GenBuffer{Name: "batch1", Count: 6, Multiplier: 1, Edits: []Edit{
					{Op: "add", First: 1, Count: 1, Value: 1000}, fill(2, 1, 1, math.Float32bits(-0.5)),
					{Op: "subnormal", First: 4, Count: 1},
				}}),
		},
		{
			name: "channelstats_3batches", kind: "channelstats", channels: 4, batches: []int{1, 4, 1},
			description: "Batches of 1, 4 and 1 tokens over 4 channels; channel 0 has an offset of -25000.",
			gen: gen(13,
				GenBuffer{Name: "batch0", Count: 4, Multiplier: 8, Edits: []Edit{{Op: "add", First: 0, Count: 1, Value: -25000}}},
				GenBuffer{Name: "batch1", Count: 16, Multiplier: 8, Edits: []Edit{{Op: "add", First: 0, Count: 4, Stride: 4, Value: -25000}}},
				GenBuffer{Name: "batch2", Count: 4, Multiplier: 8, Edits: []Edit{{Op: "add", First: 0, Count: 1, Value: -25000}}}),
		},
	}
}
