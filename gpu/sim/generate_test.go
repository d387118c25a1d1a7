package sim

import (
	"os"
	"testing"

	"github.com/mixq/mixq/kernels"
	"github.com/stretchr/testify/require"
)

// The emulator must run the committed kernel sources, not an old copy.
func TestGeneratedKernelsUpToDate(t *testing.T) {
	want, err := kernels.SimSource("table.h")
	require.NoError(t, err)
	got, err := os.ReadFile("zkernels.c")
	require.NoError(t, err)
	require.True(t, string(got) == string(want),
		"zkernels.c is stale: run make sim-kernels (go run ./gpu/sim/gen)")
}
