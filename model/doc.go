// Package model runs Llama-family language models (Hugging Face
// LlamaForCausalLM, MistralForCausalLM and MixtralForCausalLM) in pure Go,
// on original checkpoints (F32, F16, BF16) and on mixq quantized
// checkpoints used as they are.
//
// Load reads config.json and the weights. In a quantized checkpoint the
// INT8 and INT4 matrices stay packed in the file's memory mapping and every
// product with them goes through the backend's MatMul (y = x·Wᵀ with m =
// batch×tokens rows); embedding rows of a quantized embedding are
// dequantized one at a time, as they are looked up. Every other tensor is
// widened to binary32 once, at load, and its products run in this
// package's own parallel loop. Model.Float32Elements and Model.Linears say
// what is held how.
//
// The forward pass follows the Hugging Face semantics in binary32:
//
//	x = embed[token]
//	per layer:
//	    n = rmsnorm(x)·w              x·rsqrt(mean(x²)+eps)
//	    q, k, v = q_proj(n), k_proj(n), v_proj(n)
//	    q, k = rope(q), rope(k)       "rotate_half": pair (i, i+hd/2) of each head,
//	                                  angle float32(pos)·inv_freq[i], inv_freq = theta^(-2i/hd),
//	                                  scaled for rope_scaling linear or llama3
//	    a = softmax(q·kᵀ/sqrt(hd))·v  causal, grouped-query, max subtracted, KV cache
//	                                  (Mistral: within the sliding window)
//	    x = x + o_proj(a)
//	    n = rmsnorm(x)·w
//	    x = x + down(silu(gate(n))·up(n))                       dense
//	    x = x + Σ_top-k p_e·w2_e(silu(w1_e(n))·w3_e(n))         Mixtral: softmax, top-k, renormalised
//	logits = head(rmsnorm(x)·w)       lm_head, or the embedding when tied
//
// A Session holds the key/value cache of a batch of sequences; Forward
// appends the same number of tokens to each and returns their logits;
// ForwardContext also stops, within a fraction of a second on a CPU, when
// its context is done. An Observer sees the input of every linear layer,
// for calibration.
//
// The stories260K test checks the float32 path against logits from an
// independent implementation (max abs difference 5e-5, within the
// 1e-4 the reference promises); the
// Mixtral and quantized paths are checked against a naive forward pass
// written out in the tests.
package model
