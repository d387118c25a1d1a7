package model

import "math"

// expf is e^x rounded to binary32, within one unit in the last place of
// float32(math.Exp(x)) (TestExpf): the argument is reduced by multiples of
// ln 2 and e^r, |r| ≤ ln2/2, summed as a degree-7 Taylor polynomial in
// binary64 (truncation error below 5e-9 relative). It is several times
// faster than math.Exp, which matters in the softmax and SiLU.
func expf(x float32) float32 {
	if !(x > -87) || x > 88 {
		// Subnormal or zero results, overflow, NaN: rare, leave them to math.
		return float32(math.Exp(float64(x)))
	}
	const log2e = 1.4426950408889634
	const ln2 = 0.6931471805599453
	xd := float64(x)
	t := xd * log2e
	var n int
	if t < 0 {
		n = int(t - 0.5)
	} else {
		n = int(t + 0.5)
	}
	r := xd - float64(n)*ln2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return float32(p * math.Float64frombits(uint64(n+1023)<<52))
}

// silu is x·sigmoid(x) = x / (1 + e^-x).
func silu(x float32) float32 {
	return x / (1 + expf(-x))
}
