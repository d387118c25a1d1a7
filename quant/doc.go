// Package quant is the contract of mixq: storage precisions, the group-wise
// layout of quantized matrices, the Backend interface that every compute
// backend implements, and the scalar arithmetic they must all reproduce bit
// for bit.
//
// The scheme is symmetric, group-wise absmax along the last (input) axis:
// each run of GroupSize consecutive elements of a row shares one scale,
// stored as IEEE binary16, and the last group of a row is shorter when the
// row length is not a multiple of the group size. INT8 codes lie in
// [-127, 127]; INT4 codes lie in [-7, 7] and are packed two per byte, even
// column in the low nibble.
//
// The arithmetic, with every rounding and the order of every reduction, is
// written out in docs/ARITHMETIC.md; in short, for one group:
//
//	amax = max |x|                         (sign bit cleared, exact)
//	s16  = f16(f32(amax / qmax))           (round to nearest even twice; 2^-24 if it underflows)
//	inv  = f32(1 / f32(s16))
//	q    = clamp(rint(f32(x * inv)), -qmax, qmax)
//	x'   = f32(q) * f32(s16)               (exact)
//
// NaN and Inf inputs are rejected with the lowest offending index, and a
// scale that overflows binary16 is an error. The functions ScaleBits,
// Reciprocal, Code, Decode, FoldLanes, WelfordStep and Stats.Merge are the
// single written source of those steps.
package quant
