// Package gptq chooses better INT8/INT4 codes and scales inside mixq's
// existing format: one binary16 scale per group, codes in [-qmax, qmax],
// quantized and dequantized exactly as docs/ARITHMETIC.md says. Only the
// choice changes; every reader, kernel and export is untouched, and the
// output is valid by construction because the codes are always
// quant.Code(x, quant.Reciprocal(s), qmax) of some binary32 x with a scale
// s that quant.ScaleBits produced, and callers pack them with a backend's
// Quantize from the dequantized weights (quant.Decode(q, s), which
// Quantize maps back to q: |q·s·f32(1/s) − q| ≤ 7·2^-23 < 1/2).
//
// # Second moment
//
// Moment accumulates H = Σ x xᵀ of a linear layer's inputs in binary64
// chunks folded exactly into 128-bit fixed point (see Moment), so that
// merged partial statistics equal one pass bit for bit.
//
// # Scale search
//
// SearchScale tries, for one group with absolute maximum a, the scales
// quant.ScaleBits(f32(a·α), p) for α = 1, 0.98, …, 0.60 (SearchSteps
// values) and keeps the one with the least weighted reconstruction error
//
//	err(s) = Σ_j d_j·(x_j − quant.Decode(quant.Code(x_j, 1/s, qmax), s))²
//
// in binary64, ascending j, where d_j = E[x_j²] + λ·mean(E[x²]) (the
// diagonal of the damped second moment) when calibration exists and 1
// otherwise. α = 1 is the absmax scale and a candidate replaces the best
// so far only when its error is strictly lower, so the search never
// increases its own objective over absmax.
//
// # GPTQ
//
// Quantize runs GPTQ (Frantar et al., 2022) on a matrix W [N, K] (PyTorch's
// [out, in]) given E[x xᵀ] of its inputs:
//
//  1. Damping: Hd = H + λ·mean(diag H)·I, λ = Options.Damp (0.01). A
//     channel with H_ii = 0 (dead in calibration) keeps its weights and
//     gets only the damping; if no channel is alive Hd = I (plain
//     rounding). Dead channels, fewer tokens than channels, and every
//     retry are reported as notices.
//  2. U, the upper Cholesky factor of Hd⁻¹ (Hd⁻¹ = UᵀU), as J·M⁻¹·J where
//     M is the Cholesky factor of J·Hd·J and J reverses the channel
//     order (NewFactor; the factorisation stops with its context). If a pivot is not positive the damping is multiplied by 10
//     and the factorisation retried (at most 6 times, then Hd = I).
//  3. Each row of W, independently, in binary64, column by column
//     (c = 0 … K−1): at the first column of a group (static groups: the
//     group's scale is fixed when its first column is reached), the
//     group's scale is chosen from the binary32 values of the row's
//     current, error-updated weights of the whole group — absmax
//     (quant.ScaleBits) or SearchScale with d = diag Hd; then
//     q_c = quant.Code(f32(w_c), 1/s, qmax), ŵ_c = quant.Decode(q_c, s),
//     e = (w_c − ŵ_c)/U_cc and w_j −= e·U_cj for every j > c, each update
//     one binary64 multiply then one subtraction, never fused.
//     Updates are applied lazily per block of columns (Options.BlockSize,
//     128; blocks are cut so that every group starts a block): within a
//     block at once, to the columns after it when the block ends, in
//     ascending c. Every weight therefore receives the same operations in
//     the same order as the unblocked loop, bit for bit, and at a group's
//     first column all earlier errors have reached the whole group.
//  4. The row's proxy loss (w−ŵ)ᵀ H (w−ŵ) (undamped H) is compared with
//     that of round-to-nearest with the absmax scales and, when searching,
//     with the searched scales, all on the original row; the lowest wins,
//     ties going to absmax, then search, then GPTQ. So the matrix's proxy
//     loss tr((W−Ŵ) H (W−Ŵ)ᵀ) is never above round-to-nearest's.
//
// Rows are independent and each is computed by one goroutine in a fixed
// order, so the result is the same at every thread count; the
// factorisations split independent sums over goroutines, each in
// ascending order. The Cholesky factor is computed a block of 8 columns
// at a time (each row below the block read once for the block, with 8
// independent sums), the inverse row by row, 4 rows at a time (each row
// of the inverse above them read once for the tile); both give every
// entry the operations of the column by column loops above in the same
// order (TestPackedFactorMatchesDense keeps the dense loops as the
// reference, TestGoldenResults the dense implementation's results).
//
// # Storage
//
// H, its damped copy and U are packed triangles (Sym; U by rows), 8·K(K+1)/2
// bytes each instead of 8·K². Moment.TakeMean converts a moment's
// 128-bit totals in place: their high words become H, their low words the
// factorisation's working storage, where J·Hd·J is factored, inverted in
// place and reversed into U (the packed rows of U are those of the inverse
// reversed). So H and U together take exactly the moment's 16·K(K+1)/2
// bytes (969 MB at K = 11008, where one dense K×K binary64 matrix is
// 969 MB by itself), and nothing else of that size is held. Linears that
// share an input (q/k/v, gate/up) are quantized against one Factor,
// computed once. Rows are processed in tiles of 8 that share each read
// of U and H, which interleaves rows without changing any row's
// operations (the per-row loop is kept as the reference and the tests
// compare the two bit for bit). Nothing depends on the backend: the bytes
// are the same on every one.
//
// # Calibration
//
// Sequential (calib.go) runs calibration sequences through a model.Model
// one decoder layer at a time, and within a layer one stage of linears at
// a time (q/k/v; o; gate/up; down — or router; experts' w1/w3; w2), so that
// each linear's H comes from the inputs that every already-quantized
// linear before it produces; inputs shared by several linears are
// accumulated once, and only the current stage's statistics are held.
// Memory: the model in binary32 (as model.Load holds it; each linear's
// copy is released once it is quantized), the calibration hidden states
// (tokens × hidden binary32), one stage's moments (16·K(K+1)/2 bytes per
// distinct input; each becomes H and U in place when its linears are
// quantized, and is dropped after them), one dequantized result at a
// time, and the packed results, which are the size of the output's codes
// and scales. The embedding is rounded
// first (scale search, unweighted: it is looked up, not multiplied) so
// that layer 0 sees it quantized; a head tied to it is not quantized
// again. Layers after the last targeted one are not run.
//
// Rounder hands the results to the quantization pipeline (mixq.Rounder):
// the backend's Quantize re-encodes the dequantized weights with the
// stored scales, which gives back exactly the codes chosen here.
package gptq
