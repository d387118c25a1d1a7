package cpu_test

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"testing"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/quant/quanttest"
)

var _ quant.Backend = naive{}

// TestConformance runs the suite on the default, multi-threaded backend:
// it must match the single-threaded reference bit for bit.
func TestConformance(t *testing.T) {
	b := cpu.New(0)
	t.Logf("cpu backend with %d threads", b.Threads())
	quanttest.TestBackend(t, b)
}

// TestConformanceSplit forces every kernel to split even tiny tensors into
// chunks of a few elements over more goroutines than cores, so that chunk
// boundaries fall inside rows, groups and channel blocks everywhere.
func TestConformanceSplit(t *testing.T) {
	quanttest.TestBackend(t, cpu.NewGrain(3, 1))
}

// TestConformanceGeneric runs the suite, split as in TestConformanceSplit,
// with the vector kernels of QuantizeGroups turned off, so that its
// plain-Go path is checked on machines that have the kernels too
// (TestQuantizeGroups covers it unsplit, and alone under -short: the rest
// of the suite does not depend on the kernels).
func TestConformanceGeneric(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: TestQuantizeGroups checks the plain-Go QuantizeGroups; the rest of the suite runs in TestConformanceSplit")
	}
	quanttest.TestBackend(t, cpu.NewGrain(3, 1).Generic())
}

// TestNaive runs the suite on a literal, loop-by-loop transcription of the
// contract: the optimised reference must agree with it.
func TestNaive(t *testing.T) {
	quanttest.TestBackend(t, naive{})
}

// TestProperties checks the arithmetic on the reference itself.
func TestProperties(t *testing.T) {
	quanttest.TestProperties(t, cpu.New(0))
}

// TestQuantizeGroups checks the fused, single-pass QuantizeGroups against
// GroupScales followed by Quantize, on every boundary layout, on large
// tensors, with non-finite values and with overflowing scales, split and
// unsplit, with and without the vector kernels.
func TestQuantizeGroups(t *testing.T) {
	seed := quanttest.Seed(t)
	ref := cpu.New(1)
	var layouts []quant.Layout
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		layouts = append(layouts, quanttest.BoundaryLayouts(p)...)
		layouts = append(layouts,
			quant.Layout{Rows: 300, Cols: 1000, GroupSize: 128, Precision: p},
			quant.Layout{Rows: 101, Cols: 1001, GroupSize: 7, Precision: p})
	}
	for _, b := range []*cpu.Backend{cpu.New(0), cpu.NewGrain(3, 1), cpu.New(0).Generic(), cpu.NewGrain(3, 1).Generic()} {
		for _, l := range layouts {
			what := fmt.Sprintf("%s g%d %dx%d", l.Precision, l.GroupSize, l.Rows, l.Cols)
			r := quanttest.NewRand(seed, "QuantizeGroups "+what)
			w := quanttest.Weights(r, l)
			ok, over := quanttest.ScaleLimit(l.Precision)
			variants := map[string][]float32{"finite": w}
			for _, special := range []float32{float32(math.NaN()), float32(math.Inf(-1)), over, -ok, 3e38} {
				v := slices.Clone(w)
				v[r.IntN(len(v))] = special
				if r.IntN(2) == 0 {
					v[r.IntN(len(v))] = special
				}
				variants[fmt.Sprint(special)] = v
			}
			for name, v := range variants {
				wantS := make([]uint16, l.NumScales())
				wantP := make([]byte, l.PackedBytes())
				werr := ref.GroupScales(wantS, v, l)
				if werr == nil {
					if err := ref.Quantize(wantP, v, wantS, l); err != nil {
						t.Fatal(err)
					}
				}
				gotS := make([]uint16, l.NumScales())
				gotP := make([]byte, l.PackedBytes())
				gerr := b.QuantizeGroups(gotP, gotS, v, l)
				quanttest.RequireSameError(t, what+" "+name, gerr, werr)
				if werr == nil {
					quanttest.RequireEqualBits(t, what+" "+name+": scales", gotS, wantS)
					quanttest.RequireEqualBits(t, what+" "+name+": packed", gotP, wantP)
				}
			}
		}
	}
}

func TestNew(t *testing.T) {
	if got := cpu.New(0).Threads(); got != runtime.GOMAXPROCS(0) {
		t.Errorf("New(0).Threads() = %d, want GOMAXPROCS %d", got, runtime.GOMAXPROCS(0))
	}
	if got := cpu.New(-3).Threads(); got != runtime.GOMAXPROCS(0) {
		t.Errorf("New(-3).Threads() = %d", got)
	}
	if got := cpu.New(5).Threads(); got != 5 {
		t.Errorf("New(5).Threads() = %d", got)
	}
	if cpu.New(1).Name() != "cpu" {
		t.Errorf("Name() = %q", cpu.New(1).Name())
	}
}
