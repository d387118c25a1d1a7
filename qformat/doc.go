// Package qformat defines mixq's quantized checkpoint format (docs/FORMAT.md),
// plans the output of a quantization from tensor headers alone, estimates
// its exact size, and reads quantized checkpoints back as float32.
//
// A quantized checkpoint is a directory laid out like its input: safetensors
// shards, an index when sharded, and config.json with a quantization_config
// block. An INT8 or INT4 weight W becomes two tensors, W.qweight (packed
// codes, [rows, row bytes]) and W.scales (F16, [rows, groups per row]); F16
// and F32 tensors keep their names; kept tensors (vectors) are copied
// byte for byte. Every output tensor's origin is recorded in the shard's
// __metadata__ under "mixq:<name>": precision, group size, original dtype and
// shape.
//
// Planning is deterministic, and the planned header bytes are the ones the
// writer emits, so Estimate equals the bytes on disk exactly.
//
// Reading trusts nothing: Open checks every record against the stored
// headers (dtypes, shapes, element counts that fit an int64), and
// Model.Codes, the one way to the packed data, checks the scales (finite,
// non-negative, +0 only over an all-zero group) and the codes (INT8 never
// -128, INT4 never -8, padding nibbles 0) before returning them. The data
// checks run on first use rather than at Open so that header-only readers
// (inspect, estimate) stay instant on large checkpoints; every decoder
// calls Codes before producing anything, and the scan runs at memory speed
// (BenchmarkCheckCodes).
package qformat
