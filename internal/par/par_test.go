package par

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitCoversEveryUnitOnce(t *testing.T) {
	for _, c := range []struct{ units, align, n int }{{0, 1, 1}, {10, 1, 3}, {10, 4, 3}, {7, 8, 2}, {100, 3, 7}, {5, 1, 9}} {
		var mu sync.Mutex
		seen := make([]int, c.units)
		Split(c.units, c.align, c.n, func(_, lo, hi int) {
			if hi < c.units {
				assert.Zero(t, hi%c.align, "inner boundary %d not aligned to %d", hi, c.align)
			}
			mu.Lock()
			defer mu.Unlock()
			for i := lo; i < hi; i++ {
				seen[i]++
			}
		})
		for i, s := range seen {
			assert.Equal(t, 1, s, "units=%d align=%d n=%d: unit %d", c.units, c.align, c.n, i)
		}
	}
}

var sink [8]byte

// A fault on a worker's mapped read comes back on the calling goroutine,
// where the caller can recover it, instead of killing the process.
func TestSplitRaisesWorkerFaultsOnTheCaller(t *testing.T) {
	page := os.Getpagesize()
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, make([]byte, 8*page), 0o644))
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, 8*page, syscall.PROT_READ, syscall.MAP_SHARED)
	require.NoError(t, err)
	defer syscall.Munmap(m)
	require.NoError(t, os.Truncate(p, int64(page)))

	got := func() (r any) {
		defer func() { r = recover() }()
		Split(8, 1, 4, func(c, lo, hi int) {
			if c == 0 {
				return // the caller's own chunk reads nothing
			}
			var s byte
			for _, b := range m[lo*page : hi*page] {
				s += b
			}
			sink[c] = s
		})
		return nil
	}()
	require.NotNil(t, got)
	_, ok := got.(interface{ Addr() uintptr })
	assert.True(t, ok, "the fault itself, with its address: %v", got)
}
