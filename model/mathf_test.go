package model

import (
	"math"
	"testing"
)

// ulps is the distance between two finite binary32 values of the same sign in units in the last place.
func ulps(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	return max(d, -d)
}

func TestExpf(t *testing.T) {
	worst := int64(0)
	check := func(x float32) {
		got, want := expf(x), float32(math.Exp(float64(x)))
		if math.IsInf(float64(want), 1) {
			if !math.IsInf(float64(got), 1) {
				t.Fatalf("expf(%v) = %v, want +Inf", x, got)
			}
			return
		}
		u := ulps(got, want)
		worst = max(worst, u)
		if u > 1 {
			t.Fatalf("expf(%v) = %v, float32(math.Exp) = %v: %d ulps apart", x, got, want, u)
		}
	}
	for i := -2_000_000; i <= 2_000_000; i++ {
		check(float32(i) * (100.0 / 2_000_000))
	}
	for _, x := range []float32{0, -0, 1e-30, -1e-30, -86.99, -87, -87.01, -103, -104, -200, 88, 88.01, 88.7, 89, 1000,
		float32(math.Inf(-1)), math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32} {
		check(x)
	}
	if got := expf(float32(math.NaN())); !math.IsNaN(float64(got)) {
		t.Fatalf("expf(NaN) = %v", got)
	}
	if got := expf(float32(math.Inf(-1))); got != 0 {
		t.Fatalf("expf(-Inf) = %v", got)
	}
	t.Logf("expf within %d ulp of float32(math.Exp) over [-100, 100]", worst)
}
