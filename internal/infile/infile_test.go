package infile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mixq/mixq/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// within runs f and fails the test if it has not returned after a few
// seconds: the defect being guarded against is an open that never returns.
func within(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("still blocked after 5 s")
		return nil
	}
}

func TestOpenRefusesFIFOWithoutBlocking(t *testing.T) {
	p := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, unix.Mkfifo(p, 0o644))
	err := within(t, func() error { _, _, err := Open(p); return err })
	require.Error(t, err)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), p)
	assert.Contains(t, err.Error(), "named pipe")

	// A symlink to the FIFO is followed and refused the same way.
	l := filepath.Join(t.TempDir(), "link.json")
	require.NoError(t, os.Symlink(p, l))
	err = within(t, func() error { _, err := ReadFile(l, 1<<20, "token list"); return err })
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), "named pipe")
}

func TestReadFileRefusesDevice(t *testing.T) {
	// /dev/zero never ends: read whole it would exhaust memory.
	l := filepath.Join(t.TempDir(), "zt.json")
	require.NoError(t, os.Symlink("/dev/zero", l))
	err := within(t, func() error { _, err := ReadFile(l, 1<<30, "token list"); return err })
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), l)
	assert.Contains(t, err.Error(), "device")
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r.json")
	require.NoError(t, os.WriteFile(p, []byte("[1,2]"), 0o644))
	l := filepath.Join(dir, "l.json")
	require.NoError(t, os.Symlink(p, l))

	raw, err := ReadFile(l, 5, "rules file")
	require.NoError(t, err, "a symlink to a regular file is followed")
	assert.Equal(t, "[1,2]", string(raw))

	_, err = ReadFile(p, 4, "rules file")
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), "larger than 4 bytes, which no rules file is")

	_, err = ReadFile(filepath.Join(dir, "missing.json"), 5, "rules file")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.ErrorIs(t, err, quant.ErrInput)

	_, err = ReadFile(dir, 5, "rules file")
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), "a directory")
	assert.False(t, errors.Is(err, fs.ErrNotExist))
}
