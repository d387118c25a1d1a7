// Package ggufexport converts a mixq quantized checkpoint of a Llama,
// Mistral or Mixtral model into one GGUF file that llama.cpp and ollama
// load, without re-quantizing: the codes and scales are moved, not
// recomputed, so llama.cpp decodes exactly the floats `mixq dequantize`
// gives.
//
// Per tensor (mixq precision → ggml type):
//
//	int4, group a multiple of 32, row a multiple of 32  → Q4_0 (nibble = code + 8;
//	      a group of 64 or 128 repeats its scale in each of its 32-blocks)
//	int8, same conditions                                → Q8_0
//	f16 → F16, f32 → F32, kept 1-D tensors (norms)       → F32 (exact widening)
//	int4/int8 whose rows or groups are not multiples of 32 → F16 of the dequantized
//	      values, with a notice (llama.cpp does the same for such rows)
//
// Mixtral's experts are stacked into ffn_{gate,down,up}_exps tensors
// [experts, rows, cols]; one ggml type must hold them all, so experts of
// mixed precision widen losslessly: INT4 and INT8 together become Q8_0
// (an INT4 code is a valid Q8_0 code), anything else together F32.
//
// Tensor names, metadata keys and layouts follow llama.cpp's
// convert_hf_to_gguf.py (LlamaModel): Q and K rows are permuted back from
// the Hugging Face rotate_half order to llama.cpp's interleaved one — a
// permutation of whole rows, so quantized rows move with their scales —
// tied embeddings leave out output.weight, llama3 RoPE scaling adds the
// rope_freqs.weight factors. Plan computes the whole file layout (and so
// its exact size) from the tensor records, the config and the tokenizer
// files alone, which is what `mixq estimate --format gguf` reports.
package ggufexport
