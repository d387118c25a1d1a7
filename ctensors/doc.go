// Package ctensors writes a mixq checkpoint as a Hugging Face directory in
// the compressed-tensors "pack-quantized" format that vLLM and transformers
// load (quant_method "compressed-tensors"), without re-quantizing.
//
// Each INT4/INT8 linear weight W (an `*_proj` or Mixtral expert `w1/w2/w3`
// matrix [rows, cols]) becomes, as compressed-tensors' PackedQuantizationCompressor
// and vLLM's CompressedTensorsWNA16 scheme define them:
//
//	W_packed  I32 [rows, ceil(cols / (32/bits))]  unsigned codes q + 2^(bits-1)
//	                                               (uint4b8 / uint8b128), element
//	                                               k of a word in bits [k·bits, (k+1)·bits)
//	W_scale   F16 [rows, cols / group]              mixq's scales, bit for bit
//	W_shape   I64 [2]                               the original [rows, cols]
//
// (named "<module>.weight_packed", ".weight_scale", ".weight_shape"), with
// value (unsigned − offset) · scale: the same f32 product as mixq's. Every
// (bits, group size) pair is one config group listing its modules by exact
// name; the symmetric "group" strategy is used throughout.
//
// What vLLM cannot load quantized is written in floating point: F16/F32
// tensors as they are, kept tensors in their original dtype, and INT4/INT8
// tensors that are not packable linears (embeddings, lm_head, the MoE
// router) or whose row length is not a multiple of the group size and of
// the pack factor, dequantized exactly to F32 with a notice. Every linear
// layer written unquantized is listed in "ignore". config.json gets
// torch_dtype float16, so that runtimes keep the F16 scales exact.
package ctensors
