// Package importance scores the tensors of a checkpoint by how much their
// precision matters, and provides the two policies that spend precision by
// that score: dynamic (fixed shares of F16, INT8 and INT4) and budget (the
// least importance-weighted error at an exact output size).
//
// # API
//
//	cal := importance.Start(be)                      // calibration, streaming
//	cal.Observe(layer, x, tokens, in)                // any number of batches
//	stats, _ := cal.End()                            // *CalibStats
//	stats, _ = importance.FromModel(m, seqs, be)     // built-in forward pass
//	stats, _ = importance.ReadActivations(paths, be) // `mixq calibrate` dumps
//	stats, _ = importance.ReadStats(path)            // a file stats.Write wrote
//	stats, _ = importance.Read(paths, be)            // either kind, merged in order
//
//	a, _ := importance.Analyze(ck, importance.Options{Calib: stats, Grads: "grads.safetensors"})
//	dyn, _ := importance.NewDynamic(a, userRules, importance.DefaultHigh, importance.DefaultLow)
//	target, _ := importance.RatioTarget(ck, 6)       // or BPWTarget(ck, 4.5)
//	bud, _ := importance.NewBudget(a, userRules, ck, target, maxShard)
//	plan, _ := mixq.PlanQuantization(ck, mixq.Options{Policy: bud, MaxShardSize: maxShard})
//	json, _ := a.Report(bud).JSON()
//
// Both policies implement mixq.Policy (Name, Decide).
//
// FromModel, Read, Analyze and NewBudget have Context variants
// (FromModelContext, ReadContext, AnalyzeContext, NewBudgetContext) that
// stop within a block of work once the context is done, returning an error
// for which errors.Is(err, context.Canceled) holds, and that report
// progress through a callback (Options.Progress for Analyze); the package
// never prints.
//
// # Signals
//
// Every tensor of rank ≥ 2 with at least one element (a "matrix",
// embeddings and output heads included) gets up to three raw signals:
//
//   - weight: the RMS of its weights, sqrt(mean(w²)), from the checkpoint,
//     reduced through Backend.ChannelStats (rows as tokens, columns as
//     channels: mean over columns of var + mean²);
//   - activation: the mean over input channels of the variance of the
//     layer's input, from calibration statistics (Backend.ChannelStats);
//   - gradient: the mean of the tensor of the same name in a gradients
//     file, a safetensors file of accumulated |grad| or grad² (F32, F16 or
//     BF16, same shape as the weight, finite and non-negative), reduced
//     through Backend.ChannelStats. docs/IMPORTANCE.md shows how to write one.
//
// The calibration layer of a weight W is W without ".weight". When the
// embedding is tied to the output head, the model's Observer reports the
// head's input under the embedding's name, so the embedding's activation
// signal is the head's input. An untied embedding is a lookup with no
// input activations: its activation signal is dropped (with a notice) and
// its errors are plain squared errors.
//
// A signal that is missing is dropped with a notice (Options.Notice, and
// Analysis.Notices), never faked: for all tensors when no calibration or no
// gradients file is given; for one tensor when the statistics or the
// gradients file lack it (an MoE expert no token was routed to, say).
// Calibration layers and gradient tensors that match nothing are reported
// too. A signal with weight 0 is not used.
//
// # Normalization
//
// Each signal is normalized across the matrices that have it by min-max
// scaling of its logarithm:
//
//	n = (ln r − min ln r) / (max ln r − min ln r)       in [0, 1]
//
// Why: the raw signals have arbitrary units and scales (|grad| summed over
// 4 or 40 batches, variance or standard deviation), and span orders of
// magnitude across layers. Log-min-max is invariant under r → c·r^k for any
// c, k > 0, so none of these choices changes the normalized values (and
// |grad| and grad² give nearly the same ones); the logarithm keeps one
// outlier layer from squashing every other to 0, which plain min-max would
// do; unlike ranks, it keeps how far apart the layers are; and the bounded
// range makes the user's signal weights mean what they say. A raw value of
// 0 (an all-zero tensor) normalizes to 0; when all positive values are
// equal the signal carries no information and every value is 0.5.
//
// The combined score of a tensor is the weighted mean of the normalized
// signals it has, Σ w_s·n_s / Σ w_s over those signals only, so a signal
// missing for one tensor neither counts as 0 nor as anything else. Ranks
// order scores descending, ties broken by name.
//
// # Error metric
//
// For every matrix and every candidate — INT4 and INT8 at each group size
// of Options.GroupSizes (the plan's group size alone by default), and F16 —
// the weights are stored and read back exactly as the quantizer would store
// them: GroupScales (or, with Options.Search, gptq.SearchScales weighted by
// the damped E[x²] of the layer's input, the scales --rounding search
// writes and GPTQ starts from), Quantize and Dequantize through the backend
// for INT4 and INT8, binary16 rounding (checkpoint.EncodeFloat32) for F16; a
// precision whose scale or value overflows F16 is marked infeasible. The
// error is the expected squared error of the layer's output under a
// diagonal approximation of the input covariance:
//
//	Error = Σ_c m_c · Σ_r (w_rc − ŵ_rc)²,   m_c = E[x_c²] = var_c + mean_c²
//
// with m_c from calibration when the matrix has a calibration layer, and
// m_c = 1 (plain squared error) otherwise. RelError = Error / Σ_c m_c Σ_r
// w_rc² is that error relative to the output's energy. The budget solver
// minimizes
//
//	Loss = (1 + Score) · elements · RelError
//
// summed over matrices: the relative error makes tensors with and without
// calibration, and of different scales, comparable (the magnitudes are
// already in the score, so the absolute error would count them twice), and
// the factor elements makes the loss grow with size as the bytes do, so
// large and small tensors compete fairly per byte. Importance scales a
// tensor's error by 1× to 2×. It must not scale it by the score alone: the
// min-max normalization gives the least important tensor a score of exactly
// 0, and an error weighted by 0 made that tensor's INT4 free, so the solver
// spent its bytes on F16 elsewhere and landed far from F32 (measured: on a
// synthetic MoE at the uniform-INT8 size, mean KL 1.97 against uniform
// INT8's 0.18). With the floor it no longer trades INT4 damage for F16
// polish.
//
// # Measured sensitivity
//
// The relative error says how much a matrix's output changes, not how much
// the model's predictions do: layers differ in how far an error travels.
// When the model can be run (calibration tokens through the built-in
// forward pass; --sensitivity auto or kl), MeasureSensitivity runs up to
// DefaultSensitivitySequences calibration sequences once as they are and
// once per matrix with that matrix alone stored at a reference candidate
// (INT4 at the largest candidate group size, with the analysis's
// rounding), from the matrix's layer on (the hidden states at each layer's
// input are kept from the first pass; the embedding re-embeds), and
// records the mean KL(model ‖ perturbed) over the positions. Analyze then
// sets
//
//	Sensitivity = MeasuredKL / RelError(reference)
//	Loss        = Sensitivity × RelError        for every candidate
//
// so the losses are predicted KL divergences and their sum the budget
// minimizes is the model's predicted KL, assuming the matrices' damages
// add up and scale with the relative error (both hold to first order for
// small errors: KL is quadratic in the logit change, as the relative
// error is in the weight change). The importance score then no longer
// enters the loss; it is still reported. Measured on minillama at 6×
// (bench/QUALITY.md), this moved the output head and the embedding to INT8
// and cut the held-out mean KL several-fold against the proxy loss at the
// same bytes. Cost: one partial forward pass per matrix over a few
// thousand tokens.
//
// # Pins
//
// The user's rules (policy.Rule, first match wins) pin the tensors they
// match, under both policies; for a tied embedding a rule matching
// lm_head.weight counts as well and the wider precision wins, as in the
// static policy. The built-in component rules belong to the static policy
// alone. Tensors of rank 0 and 1 are always kept.
//
// # Dynamic policy
//
// The n unpinned matrices are ranked by predicted damage (Damage: the
// importance-weighted INT4 relative error, (1 + Score) × RelError of the
// INT4 candidate at the plan's group size; ties by score, then name),
// not by score alone: what matters is how much a tensor would lose at a
// precision, and a tensor with strong signals can quantize almost
// losslessly while a quiet one does not. A matrix INT4 cannot hold ranks
// first. The top
// nHigh = round(high·n) are F16, the bottom nLow = round(low·n) INT4, the
// rest INT8, rounding halves away from zero; if nHigh + nLow > n, nLow
// gives way (nLow = n − nHigh), so precision errs upward. With the default
// shares 0.2 and 0.4: n = 1 → one INT8; n = 2 → INT8, INT4; n = 3 → one
// each; n = 10 → 2/4/4; n = 36 → 7/15/14. Equal scores straddling a band
// boundary are split by name. A matrix that cannot be stored at its band's
// precision is widened to the next precision that holds it.
//
// # Budget policy
//
// The target is the exact size of every file written (qformat plan
// TotalBytes: shards with their headers and metadata, index and
// config.json): for ratio R it is floor(4·P/R), for B bits per weight
// floor(B·P/8), P the number of parameters of the checkpoint. Each unpinned
// matrix chooses among its feasible candidates; each choice costs the size
// of a one-tensor plan holding it (data, header entries and metadata
// record), so that total ≈ base + Σ cost, exact up to alignment padding and
// the widths of numbers in headers.
//
// The solver is the convex-hull greedy for the multiple-choice knapsack:
// every matrix starts at its cheapest option; the lower convex hull of each
// matrix's (cost, loss) points gives upgrade steps with decreasing loss
// saved per byte; all steps are taken in order of that rate while they fit
// (ties by name). Stopping at the first step that does not fit (the break
// step) and taking the fitting fraction of it solves the LP relaxation,
// whose value LowerBound no choice within the budget can beat. Hence
//
//	LowerBound ≤ OPT ≤ greedy ≤ LowerBound + ΔL_break
//
// where ΔL_break (GreedyBound) is the loss saved by the break step, at most
// one matrix's loss difference between its cheapest and its best option.
// The greedy then keeps taking later steps that still fit.
//
// Because header bytes depend on the choices, the result is then checked
// with the exact planner, qformat.Build, and refined by a local search in
// which every step is verified exactly: repair (while over the target,
// downgrade the matrix whose downgrade covers the excess with the least
// loss added); improve (apply the single or paired change that lowers the
// loss most and still fits); fill (while more than Window = 0.5% below the
// target, apply the change of up to three matrices that lands in the window
// with the least loss added, else the one that grows the size most); and
// improve again within the window. Filling may add loss: the size window is
// a requirement; Budget.Loss − Budget.LowerBound bounds how far the final
// choice can be from the optimum. A target below the smallest output (every
// unpinned matrix at its cheapest precision, pins honoured) is an error
// marked quant.ErrInput.
//
// With several group sizes each matrix chooses among all its candidates,
// precision and group size together, and Decide returns the group size
// with the precision (policy.Decision.GroupSize). Rounding is not a
// dimension of the choice: it does not change the bytes, and the best
// rounding available is never worse on its own objective, so the
// candidates are measured with the rounding the quantizer will apply
// (Options.Search for search and gptq; GPTQ's own codes are not measured
// here, since they need the layer-by-layer pass, and the search's error is
// their stand-in).
//
// The plan must be built with the same default group size (the
// analysis's) and shard size as the budget, since both change the bytes.
//
// # Calibration
//
// Calibration keeps, per layer, the count, mean and M2 of every input
// channel (quant.Stats) and nothing else: each batch is reduced with
// Backend.ChannelStats and merged with Stats.Merge, so memory does not grow
// with the number of tokens, and partial statistics (files, runs) merge.
// Merging the same batches in the same order gives bit-identical results.
// Activation dumps are read BatchElements values at a time. The statistics
// file layout, written by CalibStats.Write and read by ReadStats (values
// stored bit for bit): per layer, in sorted order,
//
//	<layer>.mean   F64 [in]
//	<layer>.m2     F64 [in]
//	<layer>.count  I64 [1]
//
// with metadata mixq.calibration = stats/1.
//
// # Report
//
// Analysis.Report(policy) lists every tensor with its raw and normalized
// signals, combined score, rank, chosen precision, the user rule that
// pinned it if any, its data bytes, and its measured error, relative error
// and loss at each candidate; plus the notices and, for budget, the target,
// the planned size and the bounds. It is deterministic: the same inputs
// give byte-identical JSON.
package importance
