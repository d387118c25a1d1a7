// Package gpu implements quant.Backend on a GPU: it validates arguments,
// moves buffers, picks the launch geometry of the kernels of package kernels
// and turns their error words into mixq's errors.
//
// The device itself is behind the small Device interface (memory, copies,
// launches, streams), so this package is pure Go and the same driver code
// runs on two devices:
//
//   - package cuda, over gorgonia.org/cu, on an NVIDIA GPU (built with
//     -tags cuda, loaded at run time as a plugin; see package backend);
//   - package gpu/sim, which runs the very same kernel sources on the CPU
//     under an emulation of the CUDA execution model, so that everything
//     but the silicon is tested on machines without a GPU.
//
// Large quantizations are cut into chunks of rows that alternate between
// two streams, so that the upload of one chunk overlaps the kernel and the
// download of the previous one. Device buffers are kept and reused across
// calls; they grow to the largest chunk seen.
package gpu
