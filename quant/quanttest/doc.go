// Package quanttest is the conformance suite of mixq backends.
//
// TestBackend runs one test body against any quant.Backend and compares every
// output with the plain-Go reference of package cpu (cpu.Reference(): one
// thread, no vector kernels) bit for bit:
// float32 and float64 results by their IEEE bit patterns, scales as uint16,
// packed codes as bytes, errors by type and fields. A difference is reported
// with its first index, both values and the number of differing elements.
//
// The inputs are random with a fresh seed each run, printed with t.Logf;
// setting MIXQ_SEED to that value reproduces a failing run. They cover the
// places where implementations diverge: sizes around every group boundary
// (Cols in {1, g−1, g, g+1, 2g−1, 2g+1, 172, 300}, odd Cols for INT4, one to
// five rows), all-zero groups, −0, binary32 subnormals, scales that are
// binary16 subnormals, exact rounding ties, heavy tails with outliers, absolute
// maxima just under and just over the binary16 scale limit, NaN and ±Inf at
// various positions, and buffers of the wrong size. Every output buffer is
// surrounded by guard elements holding a sentinel pattern, which must be
// untouched afterwards, and is pre-filled with a different pattern for the
// backend under test and for the reference, so that an element left
// unwritten shows up as a difference.
//
// When the backend also implements quant.FusedQuantizer, TestBackend checks
// QuantizeGroups against the reference's GroupScales followed by Quantize:
// the same scales, codes and error (the lowest non-finite index, or the
// first overflowing group), on the layouts of FusedLayouts, whose group
// sizes add the multiples of 8 and 16 that vector kernels take whole, with
// non-finite values and overflows planted at group edges and elsewhere.
//
// TestGolden checks a backend against the golden vectors of testdata/golden,
// which pin inputs and outputs in a language-neutral format (see the README
// there); WriteGolden regenerates them. TestProperties checks the arithmetic
// itself (error bounds, rounding, packing) on one backend.
//
// Every exported Test function is meant to be called from a backend's own
// tests:
//
//	func TestConformance(t *testing.T) { quanttest.TestBackend(t, mybackend) }
package quanttest
