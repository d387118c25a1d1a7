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
package qformat
