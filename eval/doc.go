// Package eval measures what quantization costs a model: perplexity on
// token sequences, the KL divergence of the quantized model's next-token
// distribution from the original's (mean, p99, max over positions), top-1
// agreement, and throughput.
//
// Test models often ship without a tokenizer, so sequences can be sampled
// from the original model itself at temperature 1 (Sample); the perplexity
// of the original model on its own samples is then a baseline, not a
// benchmark score, and the comparison between original and quantized is
// what matters.
//
// All log-probabilities are computed in float64 from float32 logits with
// the maximum subtracted, so KL never sees log(0).
//
// EvaluateContext and SampleContext stop soon after their context is done
// (an error wrapping context.Canceled) and report the tokens they have run
// to a progress callback. CheckSequences refuses, as quant.ErrInput,
// sequences a model cannot run: tokens outside the vocabulary, sequences
// too short, or longer than max_position_embeddings.
package eval
