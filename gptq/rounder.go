package gptq

import (
	"fmt"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
)

// Rounder chooses scales and codes for the quantization pipeline (it
// implements mixq.Rounder): a tensor with a result from Sequential gets
// exactly that result; with Search every other quantized tensor gets
// SearchScale's scales, weighted by Diag[name] (E[x²] of its input
// channels, damped as in the package documentation) when present;
// anything else is left to absmax round-to-nearest.
type Rounder struct {
	Results map[string]*Rounded
	Search  bool
	Diag    map[string][]float64
	// Damp is λ of the diagonal weights (0: DefaultDamp).
	Damp float64
}

// Round implements mixq.Rounder.
func (r *Rounder) Round(name string, row0 int, w []float32, scales []uint16, l quant.Layout) (bool, error) {
	if res, ok := r.Results[name]; ok {
		rl := res.Layout
		if rl.Cols != l.Cols || rl.GroupSize != l.GroupSize || rl.Precision != l.Precision || row0+l.Rows > rl.Rows {
			return false, fmt.Errorf("gptq: %s was quantized as %d×%d %v g%d, the plan asks rows %d.. of %d columns %v g%d",
				name, rl.Rows, rl.Cols, rl.Precision, rl.GroupSize, row0, l.Cols, l.Precision, l.GroupSize)
		}
		gpr, rb := l.GroupsPerRow(), l.RowBytes()
		copy(scales, res.Scales[row0*gpr:(row0+l.Rows)*gpr])
		// The dequantized weights, which Quantize maps back to these codes.
		return true, cpu.New(1).Dequantize(w[:l.Elements()], res.Packed[row0*rb:(row0+l.Rows)*rb], scales, l)
	}
	if !r.Search {
		return false, nil
	}
	var d []float64
	if diag, ok := r.Diag[name]; ok && len(diag) == l.Cols {
		d = Damped(diag, r.Damp)
	}
	return true, SearchScales(scales, w, d, l)
}

// Damped returns d_j + λ·mean(d), the weights SearchScale uses for a
// channel second moment d (λ = DefaultDamp when damp is 0).
func Damped(d []float64, damp float64) []float64 {
	if damp <= 0 {
		damp = DefaultDamp
	}
	var s float64
	for _, v := range d {
		s += v
	}
	lam := damp * s / float64(len(d))
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = v + lam
	}
	return out
}
