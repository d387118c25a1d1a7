// Package checkpoint opens a Hugging Face checkpoint: one safetensors file,
// or a directory of shards tied together by model.safetensors.index.json,
// with the config.json beside it.
//
// Open validates the whole checkpoint before returning anything, so later
// passes can trust it:
//
//   - every shard is a valid safetensors file (see package safetensors);
//   - with an index, the shards are exactly the plain file names its
//     weight_map lists (no path can leave the directory), each exists, and
//     the weight map and the shards' contents agree in both directions:
//     every mapped tensor is in its shard and every tensor of a shard is
//     mapped to that shard;
//   - tensor names are unique across shards;
//   - every tensor's dtype is in Options.AllowedDTypes (F32, F16 and BF16
//     by default); the error names the tensor, the file, the dtype and the
//     supported list;
//   - config.json, if present, is a JSON object (kept raw in Config).
//
// Errors caused by the files are marked with quant.ErrInput (exit code 2 on
// the command line); errors about one tensor are *quant.TensorError with the
// shard's path.
//
// Tensors are listed in a stable order, shards by sorted file name and then
// by offset within a shard, which is also the order in which reading them
// touches the files sequentially. Their data stays in the shards' read-only
// memory mappings: Raw is zero-copy, Float32 converts F32, F16 and BF16
// exactly, and Release returns a tensor's pages to the kernel once a
// streaming pass is done with it. DecodeFloat32 and EncodeFloat32 convert
// blocks of raw elements in either direction (encoding rounds to nearest
// even and reports a finite value that would overflow to infinity).
package checkpoint
