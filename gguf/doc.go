// Package gguf reads and writes GGUF files, the single-file model format of
// llama.cpp and ollama (version 3, little-endian), in pure Go.
//
// A file is a header (magic "GGUF", version, tensor and key/value counts),
// typed key/value metadata, one descriptor per tensor (name, dimensions in
// ggml order — the fastest-varying first, the reverse of a PyTorch shape —
// ggml type and offset), padding to the alignment, then the tensor data,
// each tensor starting on an aligned offset. NewLayout computes every
// offset and the exact file size from the metadata and tensor descriptors
// alone, before any data exists; Create streams the data in descriptor
// order into a temporary file beside the target that is renamed into place
// only when complete, so no partial .gguf is ever left under the target
// name. Open reads a file back (used by tests and to borrow a vocabulary).
//
// Block types: Q8_0 (an f16 scale d and 32 int8 codes, value q·d) and
// Q4_0 (d and 16 bytes; byte i holds element i in its low nibble and
// element i+16 in its high nibble, value (nibble−8)·d), besides F32, F16
// and BF16. The value of every block element is one f32 product of the
// widened f16 scale and the integer code, which is how mixq dequantizes.
package gguf
