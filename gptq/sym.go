package gptq

import (
	"errors"
	"fmt"
)

// tri is the number of entries of a packed triangle of k rows, and the
// offset of row k of a packed lower triangle.
func tri(k int) int { return k * (k + 1) / 2 }

// uOff is the offset of row c of a packed upper triangle of k rows (row c
// holds columns c … k−1).
func uOff(c, k int) int { return c*k - c*(c-1)/2 }

// Sym is a symmetric K×K binary64 matrix in packed lower-triangular
// storage: row i holds the entries (i, 0) … (i, i) at offset i(i+1)/2, so
// it takes 8·K(K+1)/2 bytes instead of 8·K² (485 MB instead of 969 MB at
// K = 11008). A Sym made by Moment.TakeMean also holds a spare buffer of
// the same size (the moment's other half), which the factorisation uses as
// its working storage, so that H, the factor and nothing else are held.
type Sym struct {
	k     int
	data  []float64
	spare []float64
}

// NewSym returns a zero K×K matrix.
func NewSym(k int) *Sym { return &Sym{k: k, data: make([]float64, tri(k))} }

// SymFromDense packs the lower triangle of the row-major K×K matrix h,
// which must be symmetric.
func SymFromDense(h []float64, k int) (*Sym, error) {
	if len(h) != k*k {
		return nil, fmt.Errorf("gptq: H has %d entries, want %d×%d", len(h), k, k)
	}
	s := NewSym(k)
	for i := range k {
		row := s.data[tri(i) : tri(i)+i+1]
		for j := range row {
			v := h[i*k+j]
			if !isFinite(v) {
				return nil, errors.New("gptq: H holds a non-finite value")
			}
			if u := h[j*k+i]; u != v {
				if !isFinite(u) {
					return nil, errors.New("gptq: H holds a non-finite value")
				}
				return nil, fmt.Errorf("gptq: H is not symmetric: entry (%d, %d) is %g, (%d, %d) is %g", i, j, v, j, i, u)
			}
			row[j] = v
		}
	}
	return s, nil
}

// K is the order of the matrix.
func (s *Sym) K() int { return s.k }

// At is entry (i, j).
func (s *Sym) At(i, j int) float64 {
	if j > i {
		i, j = j, i
	}
	return s.data[tri(i)+j]
}

// Packed is the storage: row i's entries (i, 0) … (i, i) at i(i+1)/2.
func (s *Sym) Packed() []float64 { return s.data }

// Dense returns the full row-major K×K matrix (for tests and small K).
func (s *Sym) Dense() []float64 {
	k := s.k
	out := make([]float64, k*k)
	for i := range k {
		for j := 0; j <= i; j++ {
			v := s.data[tri(i)+j]
			out[i*k+j], out[j*k+i] = v, v
		}
	}
	return out
}
