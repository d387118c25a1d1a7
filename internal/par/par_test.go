package par

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
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
