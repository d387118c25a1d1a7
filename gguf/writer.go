package gguf

import (
	"bufio"
	"errors"
	"fmt"
	"os"

	"github.com/mixq/mixq/internal/safeout"
)

// Writer streams a Layout's tensor data into a file. The file is written
// under a temporary name in the target's directory (safeout.CreateTemp) and
// renamed to the target by Close only when every byte is there; Abort (or
// any error) removes the temporary file.
type Writer struct {
	l      *Layout
	path   string
	tmp    *os.File
	buf    *bufio.Writer
	cur    int   // tensor being written
	done   int64 // bytes of tensor cur written so far
	failed error
}

// Create starts writing l to path. The caller decides whether an existing
// path may be replaced (safeout.Check); it is replaced only by Close.
func Create(path string, l *Layout) (*Writer, error) {
	tmp, err := safeout.CreateTemp(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{l: l, path: path, tmp: tmp, buf: bufio.NewWriterSize(tmp, 1<<20)}
	if _, err := w.buf.Write(l.Header()); err != nil {
		w.Abort()
		return nil, err
	}
	w.skipEmpty()
	return w, nil
}

// skipEmpty moves past zero-sized tensors.
func (w *Writer) skipEmpty() {
	for w.cur < len(w.l.Tensors) && w.l.TensorBytes(w.cur) == 0 {
		w.cur++
	}
}

// Write appends data of the tensors in layout order; a call may span the
// end of one tensor and the start of the next. Padding is inserted
// between tensors.
func (w *Writer) Write(p []byte) (int, error) {
	if w.failed != nil {
		return 0, w.failed
	}
	n := 0
	for len(p) > 0 {
		if w.cur >= len(w.l.Tensors) {
			w.failed = errors.New("gguf: more data than the layout holds")
			return n, w.failed
		}
		want := w.l.TensorBytes(w.cur) - w.done
		k := min(int64(len(p)), want)
		if _, err := w.buf.Write(p[:k]); err != nil {
			w.failed = err
			return n, err
		}
		n += int(k)
		p = p[k:]
		w.done += k
		if w.done == w.l.TensorBytes(w.cur) {
			pad := w.l.align(w.done) - w.done
			if _, err := w.buf.Write(make([]byte, pad)); err != nil {
				w.failed = err
				return n, err
			}
			w.cur++
			w.done = 0
			w.skipEmpty()
		}
	}
	return n, nil
}

// Close checks that all data was written, syncs the file and renames it
// to the target.
func (w *Writer) Close() error {
	if w.failed != nil {
		w.Abort()
		return w.failed
	}
	if w.cur < len(w.l.Tensors) {
		err := fmt.Errorf("gguf: tensor %q is incomplete (%d of %d bytes)", w.l.Tensors[w.cur].Name, w.done, w.l.TensorBytes(w.cur))
		w.Abort()
		return err
	}
	err := w.buf.Flush()
	if err == nil {
		var st os.FileInfo
		if st, err = w.tmp.Stat(); err == nil && st.Size() != w.l.Size {
			err = fmt.Errorf("gguf: wrote %d bytes, layout says %d", st.Size(), w.l.Size)
		}
	}
	if err != nil {
		w.Abort()
		w.failed = err
		return err
	}
	tmp := w.tmp
	w.tmp = nil
	if err := safeout.CommitFile(tmp, w.path); err != nil {
		w.failed = err
		return err
	}
	w.failed = errors.New("gguf: writer closed")
	return nil
}

// Abort removes the temporary file. It is safe after Close.
func (w *Writer) Abort() {
	if w.tmp != nil {
		safeout.AbortFile(w.tmp)
		w.tmp = nil
	}
	if w.failed == nil {
		w.failed = errors.New("gguf: writer aborted")
	}
}
