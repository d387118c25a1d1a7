// Package synth writes deterministic synthetic checkpoints: safetensors
// directories with Hugging Face Llama or Mixtral tensor names, a matching
// config.json, and weights whose statistics resemble a trained model's
// (heavy tails, rare large outliers, a few large input channels). They are
// mixq's built-in models for demos, tests and benchmarks; nothing needs to
// be downloaded.
//
// # Architecture
//
// A Preset fixes the sizes. Presets lists the built-in ones: "tiny-moe" and
// "tiny" for tests, "seed" (the default, a 194M-parameter Mixtral-style
// MoE) for the demo, and "llama7b-layer" (Llama-2-7B decoder layers without
// embeddings, scaled with WithLayers) for kernel and memory benchmarks.
// Specs lists the tensors in canonical order and Config gives config.json.
//
// # Values
//
// Every tensor is a function of (seed, tensor name, shape, element index)
// alone. The generator is counter-based: element i of tensor n takes the
// 64-bit hash
//
//	h = splitmix64(key + i·0x9E3779B97F4A7C15)
//	key = splitmix64(splitmix64(seed + 0x9E3779B97F4A7C15) ^ FNV-1a(n))
//
// so any range of any tensor can be generated on its own, in any chunking
// and on any number of goroutines, with identical results. Only correctly
// rounded IEEE operations are used and every product is rounded before it
// is added, so the values are the same on every platform.
//
// The standardised draw x (Fill) is Student-t with 4 degrees of freedom,
// divided by sqrt(2) to unit variance and clamped to ±32. It is sampled by
// inverse transform, without rejection: the top bit of h is the sign, and
// bits 16..62, b, give the two-sided tail probability g = (2b+1)/2⁴⁸ of
// |T|. A table of the exact t(4) quantile (the inverse of
// g = d²(3-d)/2, d = 1 - t/sqrt(t²+4)), linear in g over 64 segments per
// octave of g for 24 octaves, maps g to |T| within 3e-5 relative. The
// clamp is reached with probability 1.4e-6. Elements whose 16 low hash
// bits are below 7, a fraction 7/65536 ≈ 1.07e-4, are outliers: |x| is
// raised to at least 1 and multiplied by a factor drawn uniformly from
// [10, 50), keeping the sign, so |x| < 1600. The draw then has variance
// about 1.2 and a sample kurtosis in the hundreds (t(4) alone has an
// unbounded kurtosis; its sample kurtosis is 10 to 30 over millions of
// elements).
//
// FillTensor (what Write stores, before rounding to the checkpoint dtype)
// shapes the draw by the tensor's role (RoleOf):
//
//   - Matrix (every weight of rank 2 or more except the token embedding,
//     including lm_head and the MoE router): x/sqrt(fan_in), fan_in being the
//     last dimension, after min(clamp(fan_in/512, 2, 8), fan_in) distinct
//     input channels (columns, see Channels) are multiplied by scales drawn
//     uniformly from [4, 8), mimicking the activation-outlier channels of
//     trained models.
//   - Embedding (model.embed_tokens.weight): 0.02·x.
//   - Norm (rank ≤ 1): 1 + 0.02·clamp(x, -5, 5), in [0.9, 1.1].
//
// Every value is finite and below 12800 in magnitude (1600 for any fan_in
// of 64 or more), well inside F16 and BF16 range.
//
// # Writing
//
// Write streams the tensors through package shards in chunks of 512 Ki
// elements, generated on GOMAXPROCS goroutines and converted to F32, F16
// or BF16 with round-to-nearest-even, so memory stays bounded (a few MiB
// per goroutine) for checkpoints of any size. The draw costs about 4 ns an
// element on one core.
package synth
