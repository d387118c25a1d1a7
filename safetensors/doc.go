// Package safetensors reads and writes the Hugging Face safetensors format,
// strictly.
//
// A file is an 8-byte little-endian length N, N bytes of JSON header, and
// the data buffer. The header is an object mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]}, with offsets relative to
// the start of the data buffer (file offset 8+N), plus an optional
// "__metadata__" object of string to string.
//
// Reading (ParseHeader, Open) accepts a file only if the header and the data
// agree exactly; anything else is an error marked with quant.ErrInput that
// names what is wrong (the tensor, its offsets, the dtype) and, from Open,
// the file:
//
//   - N is non-zero, at most MaxHeaderSize, and 8+N does not pass the end of
//     the file;
//   - the header is valid UTF-8 and exactly one JSON object, followed by
//     nothing but whitespace;
//   - names are unique (checked on the raw JSON, where a map would hide a
//     repeat), there are at most MaxTensors, and "__metadata__" holds only
//     strings;
//   - each entry is an object with exactly the fields dtype, shape and
//     data_offsets: a known dtype, non-negative integer dimensions whose
//     byte size fits int64, 0 <= begin <= end, and end-begin equal to
//     numel × dtype size (zero-element tensors have begin == end);
//   - sorted by begin, the tensors tile the data buffer: the first begins at
//     0, each begins where the previous ends, and the last ends at the end
//     of the file.
//
// Open maps the data buffer read-only and shared, so tensors are zero-copy
// views (File.Data) and File.Release hands a finished tensor's pages back to
// the kernel, bounding the memory of a streaming pass to about one tensor.
// It needs a Unix mmap (golang.org/x/sys/unix).
//
// Writing (Create, Writer) streams: the header is computed from declared
// Specs up front (EncodeHeader; FileSize gives the exact size beforehand),
// then data is written tensor by tensor in declared order, each in any
// number of chunks. The header is deterministic (metadata first with sorted
// keys, tensors in declared order, contiguous offsets, compact JSON padded
// with spaces so the data starts at a multiple of 8). The file is written
// under a temporary name in the destination directory and renamed into
// place only by a successful Close, after an fsync; any failure removes it.
package safetensors
