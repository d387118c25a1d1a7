package safetensors

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/mixq/mixq/internal/safeout"
)

// Writer streams a safetensors file: the header is written first from the
// declared specs, then each tensor's data in declared order, possibly in
// several chunks. Nothing appears at the destination path until Close
// succeeds, so a crash or an error never leaves a truncated checkpoint
// behind.
type Writer struct {
	path   string
	tmp    *os.File
	buf    *bufio.Writer
	specs  []Spec
	sizes  []int64
	index  map[string]int
	cur    int   // tensor being written
	done   int64 // bytes of specs[cur] written so far
	err    error // first error; the Writer is unusable after one
	closed bool
}

// Create validates specs and metadata (see EncodeHeader), creates the
// temporary file (safeout.CreateTemp: ".NAME.mixq-tmp-PID-RANDOM") in the
// destination directory (the same file system, so the final rename is
// atomic) and writes the header. Replacing an existing path is the caller's
// decision (see safeout.CheckReplace).
func Create(path string, specs []Spec, metadata map[string]string) (*Writer, error) {
	prefix, err := EncodeHeader(specs, metadata)
	if err != nil {
		return nil, err
	}
	tmp, err := safeout.CreateTemp(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		path:  path,
		tmp:   tmp,
		buf:   bufio.NewWriterSize(tmp, 1<<20),
		specs: slices.Clone(specs), // the caller may reuse its slice
		sizes: make([]int64, len(specs)),
		index: make(map[string]int, len(specs)),
	}
	for i, s := range specs {
		w.sizes[i] = s.Bytes()
		w.index[s.Name] = i
	}
	if _, err := w.buf.Write(prefix); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// Write appends data to tensor name. Tensors must be written in declared
// order; a tensor may take several calls with consecutive chunks and is
// complete when Spec.Bytes() bytes have been written. A zero-byte tensor
// needs no call (an empty one is accepted). Writing to a tensor before the
// previous one is complete, writing one that was already passed or not
// declared, or writing more bytes than declared is an error, after which
// the Writer only accepts Abort or Close (which then fails).
func (w *Writer) Write(name string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("safetensors: write to a closed Writer")
	}
	if err := w.seek(name); err != nil {
		w.err = err
		return err
	}
	if int64(len(data)) > w.sizes[w.cur]-w.done {
		w.err = fmt.Errorf("safetensors: tensor %q: writing %d more bytes after %d exceeds its %d bytes",
			name, len(data), w.done, w.sizes[w.cur])
		return w.err
	}
	if _, err := w.buf.Write(data); err != nil {
		w.err = fmt.Errorf("safetensors: writing tensor %q: %w", name, err)
		return w.err
	}
	w.done += int64(len(data))
	return nil
}

// seek makes name the current tensor, moving past the current one if it is
// complete and past any zero-byte tensors in between.
func (w *Writer) seek(name string) error {
	want, ok := w.index[name]
	if !ok {
		return fmt.Errorf("safetensors: tensor %q was not declared", name)
	}
	if want == w.cur {
		return nil
	}
	if want < w.cur {
		return fmt.Errorf("safetensors: tensor %q written out of order: it is declared before %q, which is already being written", name, w.specs[w.cur].Name)
	}
	if w.done != w.sizes[w.cur] {
		return fmt.Errorf("safetensors: tensor %q written before %q was complete (%d of %d bytes)",
			name, w.specs[w.cur].Name, w.done, w.sizes[w.cur])
	}
	for i := w.cur + 1; i < want; i++ {
		if w.sizes[i] != 0 {
			return fmt.Errorf("safetensors: tensor %q written out of order: %q is declared before it and was not written", name, w.specs[i].Name)
		}
	}
	w.cur, w.done = want, 0
	return nil
}

// Close checks that every tensor was written in full, flushes and fsyncs
// the temporary file and renames it to the destination. On any error the
// temporary file is removed and nothing is left at the destination that was
// not there before. Closing twice is an error.
func (w *Writer) Close() error {
	if w.closed {
		return errors.New("safetensors: Writer already closed")
	}
	err := w.finish()
	if err != nil {
		w.Abort()
		return err
	}
	w.closed = true
	return nil
}

func (w *Writer) finish() error {
	if w.err != nil {
		return w.err
	}
	for i := w.cur; i < len(w.specs); i++ {
		done := int64(0)
		if i == w.cur {
			done = w.done
		}
		if done != w.sizes[i] {
			return fmt.Errorf("safetensors: tensor %q incomplete: %d of %d bytes written", w.specs[i].Name, done, w.sizes[i])
		}
	}
	if err := w.buf.Flush(); err != nil {
		return err
	}
	// CreateTemp makes the file private (0600); a checkpoint is not secret.
	if err := w.tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := w.tmp.Sync(); err != nil {
		return err
	}
	if err := w.tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(w.tmp.Name(), w.path); err != nil {
		return err
	}
	// Make the rename itself durable. Best effort: the file is complete and
	// in place, and some file systems refuse to sync a directory.
	if d, err := os.Open(filepath.Dir(w.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// Abort discards the temporary file. It is a no-op after Close or a
// previous Abort.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.err == nil {
		w.err = errors.New("safetensors: Writer aborted")
	}
	_ = w.tmp.Close() // may already be closed by a failed Close
	_ = os.Remove(w.tmp.Name())
}
