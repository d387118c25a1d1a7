package safetensors

import (
	"errors"
	"fmt"
	"os"

	"github.com/mixq/mixq/internal/infile"
	"github.com/mixq/mixq/quant"
	"golang.org/x/sys/unix"
)

// File is an open safetensors file whose data buffer is memory-mapped
// read-only. Data, Release, Header and Path may be called concurrently;
// Close must not race with them, and invalidates every slice Data returned.
type File struct {
	path   string
	header *Header
	// mapping is the whole mmap, which starts at the page boundary at or
	// before DataStart; data is the data buffer within it, at offset skew.
	mapping []byte
	data    []byte
	skew    int
}

// Open parses and validates the header of the file at path and maps its
// data buffer. Errors are marked with quant.ErrInput when the file is
// malformed, and always name the path.
func Open(path string) (*File, error) {
	// infile.Open refuses a FIFO or device without blocking on it (a missing
	// input is the user's to fix, too).
	osf, st, err := infile.Open(path)
	if err != nil {
		return nil, err
	}
	// The mapping outlives the descriptor, so it is closed on every path.
	defer osf.Close()
	h, err := parseHeader(osf, st.Size())
	if err != nil {
		var te *quant.TensorError
		if errors.As(err, &te) {
			te.File = path
			return nil, quant.InputError(te)
		}
		return nil, quant.InputError(fmt.Errorf("%s: %w", path, err))
	}
	f := &File{path: path, header: h}
	dataSize := st.Size() - h.DataStart
	if dataSize == 0 {
		return f, nil // mmap rejects a zero length; there is nothing to map
	}
	page := int64(os.Getpagesize())
	start := h.DataStart / page * page
	length := st.Size() - start
	if int64(int(length)) != length {
		return nil, fmt.Errorf("%s: %d bytes do not fit in the address space", path, length)
	}
	m, err := unix.Mmap(int(osf.Fd()), start, int(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	f.mapping = m
	f.skew = int(h.DataStart - start)
	f.data = m[f.skew:]
	return f, nil
}

// Path is the path the file was opened with.
func (f *File) Path() string { return f.path }

// Header is the validated header. Callers must not modify it.
func (f *File) Header() *Header { return f.header }

// Data is the tensor's bytes inside the mapping, valid until Close. The
// mapping is read-only: writing through the slice faults. t must come from
// this file's header; the capacity is clipped so an append copies instead of
// running into the next tensor.
func (f *File) Data(t TensorInfo) []byte {
	return f.data[t.Begin:t.End:t.End]
}

// Release tells the kernel the tensor's pages are no longer needed, so a
// pass that streams through a checkpoint larger than memory keeps only about
// one tensor resident. Only pages lying wholly inside the tensor are
// dropped, never one shared with a neighbour that may still be in use. The
// data stays readable: a later access faults the pages back in from the
// file. Errors are ignored because this is only advice.
func (f *File) Release(t TensorInfo) {
	if f.mapping == nil {
		return
	}
	page := int64(os.Getpagesize())
	lo := (int64(f.skew) + t.Begin + page - 1) / page * page
	hi := (int64(f.skew) + t.End) / page * page
	if hi > lo {
		_ = unix.Madvise(f.mapping[lo:hi], unix.MADV_DONTNEED)
	}
}

// Close unmaps the data. It is safe to call more than once.
func (f *File) Close() error {
	m := f.mapping
	f.mapping, f.data = nil, nil
	if m == nil {
		return nil
	}
	if err := unix.Munmap(m); err != nil {
		return fmt.Errorf("%s: munmap: %w", f.path, err)
	}
	return nil
}
