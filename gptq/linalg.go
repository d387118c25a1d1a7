package gptq

import (
	"fmt"
	"math"

	"github.com/mixq/mixq/internal/par"
)

// maxRetries is how many times the damping is multiplied by 10 after a
// failed factorisation before falling back to Hd = I.
const maxRetries = 6

// factor returns U, the upper Cholesky factor of Hd⁻¹ (row-major K×K, zero
// below the diagonal), with Hd = H + λ·mean(diag H)·I, and the damped
// diagonal of Hd. notices says what was done to H beyond the plain damping.
func factor(h []float64, k int, damp float64, tokens int64, workers int) (u, diag []float64, notices []string) {
	var sum float64
	dead := 0
	for i := range k {
		d := h[i*k+i]
		if d > 0 {
			sum += d
		} else {
			dead++
		}
	}
	if dead > 0 {
		notices = append(notices, fmt.Sprintf("%d of %d input channels never active in calibration: they get only the damping", dead, k))
	}
	if tokens < int64(k) {
		notices = append(notices, fmt.Sprintf("only %d calibration tokens for %d input channels: H is singular, damping makes it definite", tokens, k))
	}
	mean := sum / float64(k)
	var hd []float64
	for try := 0; ; try++ {
		hd = make([]float64, k*k) // a failed try leaves a factor behind
		if mean == 0 || try > maxRetries {
			if mean != 0 {
				notices = append(notices, "H stayed indefinite after the retries: plain rounding (H = I)")
			} else {
				notices = append(notices, "no input channel active in calibration: plain rounding (H = I)")
			}
			for i := range k {
				hd[i*k+i] = 1
			}
			u, _ := upperInverseFactor(hd, k, workers)
			diag = make([]float64, k)
			for i := range diag {
				diag[i] = 1
			}
			return u, diag, notices
		}
		lam := damp * math.Pow(10, float64(try)) * mean
		// Reverse the channel order as it is copied: hd = J·(H + λI)·J.
		for i := range k {
			for j := range k {
				hd[(k-1-i)*k+(k-1-j)] = h[i*k+j]
			}
			hd[(k-1-i)*k+(k-1-i)] += lam
		}
		diag = make([]float64, k)
		for i := range k {
			diag[i] = hd[(k-1-i)*k+(k-1-i)]
		}
		u, ok := upperInverseFactor(hd, k, workers)
		if ok {
			return u, diag, notices
		}
		notices = append(notices, fmt.Sprintf("H + %g·mean(diag H)·I is not positive definite: damping ×10", damp*math.Pow(10, float64(try))))
	}
}

// upperInverseFactor takes a = J·Hd·J (overwritten) and returns
// U = J·chol(a)⁻¹·J, the upper Cholesky factor of Hd⁻¹, or false when a
// pivot is not positive and finite.
func upperInverseFactor(a []float64, k, workers int) ([]float64, bool) {
	if !cholesky(a, k, workers) {
		return nil, false
	}
	x := lowerInverse(a, k, workers)
	// U[i][j] = X[K-1-i][K-1-j], x holding X column by column; a (L) is
	// no longer needed and holds U, which saves a K×K buffer.
	u := a
	clear(u)
	for i := range k {
		for j := i; j < k; j++ {
			u[i*k+j] = x[(k-1-j)*k+(k-1-i)]
		}
	}
	for _, v := range u {
		if !isFinite(v) {
			return nil, false
		}
	}
	return u, true
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// cholesky replaces the lower triangle of the symmetric a (row-major k×k)
// with L, a = L·Lᵀ, column by column:
//
//	L_jj = sqrt(a_jj − Σ_{m<j} L_jm²)
//	L_ij = (a_ij − Σ_{m<j} L_im·L_jm) / L_jj     for i > j
//
// each sum in ascending m, from +0, one multiply then one subtraction per
// term. The rows i > j of a column are independent and are split over
// goroutines. It reports false for a pivot that is not positive.
func cholesky(a []float64, k, workers int) bool {
	for j := range k {
		rj := a[j*k : j*k+j]
		d := a[j*k+j]
		for _, v := range rj {
			d -= float64(v * v)
		}
		if !(d > 0) || !isFinite(d) {
			return false
		}
		ljj := math.Sqrt(d)
		a[j*k+j] = ljj
		rows := k - 1 - j
		w := max(1, min(workers, rows*j>>15))
		par.Split(rows, 1, w, func(_, lo, hi int) {
			for i := j + 1 + lo; i < j+1+hi; i++ {
				ri := a[i*k : i*k+j][:len(rj)]
				s := a[i*k+j]
				for m, v := range ri {
					s -= float64(v * rj[m])
				}
				a[i*k+j] = s / ljj
			}
		})
	}
	return true
}

// lowerInverse returns X = L⁻¹ for the lower triangle L of l, stored column
// by column (x[c*k+i] = X_ic). Column c, independently of the others:
//
//	X_cc = 1/L_cc
//	X_ic = −(Σ_{m=c}^{i−1} L_im·X_mc) / L_ii     for i > c, sum ascending in m
func lowerInverse(l []float64, k, workers int) []float64 {
	x := make([]float64, k*k)
	w := max(1, min(workers, k*k*k>>18))
	// Column c costs about (k−c)²/2: deal the columns round-robin so the
	// goroutines get similar work (each column is computed alone).
	par.Split(w, 1, w, func(part, _, _ int) {
		for c := part; c < k; c += w {
			col := x[c*k : (c+1)*k]
			col[c] = 1 / l[c*k+c]
			for i := c + 1; i < k; i++ {
				li := l[i*k+c : i*k+i]
				xs := col[c:i][:len(li)]
				var s float64
				for m, v := range li {
					s += float64(v * xs[m])
				}
				col[i] = -s / l[i*k+i]
			}
		}
	})
	return x
}
