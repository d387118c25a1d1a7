package infile

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/mixq/mixq/quant"
	"golang.org/x/sys/unix"
)

// Open opens path read-only and returns it with its fstat. It refuses, with
// an error marked quant.ErrInput that names the path, anything but a regular
// file. A missing file gives an input error that also satisfies
// errors.Is(err, fs.ErrNotExist).
func Open(path string) (*os.File, fs.FileInfo, error) {
	// O_NONBLOCK makes opening a FIFO with no writer return at once instead
	// of waiting for one; on a regular file it changes nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, quant.InputError(err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, quant.InputError(err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, quant.InputError(fmt.Errorf("%s: not a regular file (%s)", path, Kind(st.Mode())))
	}
	return f, st, nil
}

// Kind describes a file mode for an error message.
func Kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe, which could block forever"
	case m&fs.ModeCharDevice != 0, m&fs.ModeDevice != 0:
		return "a device, which may never end"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsRegular():
		return "a regular file"
	}
	return "mode " + m.String()
}

// ReadFile reads the regular file at path whole, refusing one larger than
// max bytes before reading it; what names the kind of file in that error
// ("a token list"). Errors are as Open's.
func ReadFile(path string, max int64, what string) ([]byte, error) {
	f, st, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tooBig := func() error {
		return quant.InputError(fmt.Errorf("%s: larger than %s, which no %s is", path, size(max), what))
	}
	if st.Size() > max {
		return nil, tooBig()
	}
	// The limit still applies when the file grows while it is read.
	raw, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(raw)) > max {
		return nil, tooBig()
	}
	return raw, nil
}

func size(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
