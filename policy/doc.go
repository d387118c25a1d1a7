// Package policy decides the storage precision of every tensor of a
// checkpoint.
//
// A Rule maps a regular expression over tensor names to a precision; rules
// form an ordered list and the first match wins. The static policy puts the
// user's rules (from --rules files and --rule flags, in that order) in front
// of the built-in component rules of the seed design:
//
//	MoE experts                      → int4
//	output head, embeddings          → f16
//	core: bk_core, attention         → int8
//	everything else                  → int8
//
// Tensors of rank 0 or 1 (norms, biases, scalars) are never quantized: they
// keep their original dtype whatever the rules say, because they are a
// negligible share of the bytes and quantizing them costs accuracy for nothing.
//
// Tied embeddings, where the checkpoint has no lm_head and the output
// projection reuses the embedding matrix, give that one matrix both roles:
// it gets the wider of the precisions the rules choose for the embeddings and
// for the head (lm_head.weight), so a rule meant for the head is not silently
// lost.
//
// The package is pure Go with no I/O beyond reading a rules file.
package policy
