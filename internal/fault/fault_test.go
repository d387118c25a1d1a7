//go:build linux

package fault

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A read past the end of a file that shrank under its mapping is an error,
// not a SIGBUS that kills the process.
func TestCatchTurnsAMappedReadFaultIntoAnError(t *testing.T) {
	page := os.Getpagesize()
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, make([]byte, 4*page), 0o644))
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, 4*page, syscall.PROT_READ, syscall.MAP_SHARED)
	require.NoError(t, err)
	defer syscall.Munmap(m)
	require.NoError(t, os.Truncate(p, int64(page)))

	var sum byte
	err = Catch(func() {
		for _, b := range m[2*page:] {
			sum += b
		}
	})
	require.ErrorIs(t, err, ErrFault)
	assert.Contains(t, err.Error(), "changed or was truncated")
	assert.NoError(t, Catch(func() { sum += m[0] }), "the part still backed by the file reads fine")
}

func TestCatchLetsOtherPanicsThrough(t *testing.T) {
	assert.PanicsWithValue(t, "boom", func() { _ = Catch(func() { panic("boom") }) })
}
