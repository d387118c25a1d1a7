// Package shards writes a checkpoint directory the way Hugging Face lays one
// out: one model.safetensors, or numbered shards with a
// model.safetensors.index.json when the data exceeds a maximum shard size,
// plus an optional config.json.
//
// The directory is written under a temporary name beside the target and
// renamed into place only when every file is complete, so an interrupted
// run leaves no half-written checkpoint behind. Plan computes the exact
// bytes of every file from the tensor list alone, which is how mixq's size
// estimate equals what is written.
package shards
