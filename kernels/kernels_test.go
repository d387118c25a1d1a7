package kernels

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every kernel has PTX for both targets, compiled without fused multiply-adds
// and flush-to-zero (the contract), and its entry point is in its family.
func TestPTX(t *testing.T) {
	for _, k := range []string{GroupScales, QuantizeGroups, Quantize, Dequantize, GEMV, GEMVStaged, GEMM, ChannelWelford} {
		fam, err := Family(k)
		require.NoError(t, err)
		for _, arch := range []string{"compute_80", "compute_90"} {
			src, err := PTX(arch, fam)
			require.NoError(t, err)
			require.Contains(t, src, ".entry "+k+"(", "%s/%s", arch, fam)
			require.Contains(t, src, ".target sm_"+strings.TrimPrefix(arch, "compute_"))
			require.NotContains(t, src, "fma.", "%s/%s: contracted multiply-add", arch, fam)
			require.NotContains(t, src, ".ftz", "%s/%s: flush to zero", arch, fam)
			require.NotContains(t, src, ".approx", "%s/%s: approximate operation", arch, fam)
		}
	}
	_, err := Family("nope")
	require.Error(t, err)
}

func TestArch(t *testing.T) {
	for cc, want := range map[[2]int]string{{8, 0}: "compute_80", {8, 9}: "compute_80", {9, 0}: "compute_90", {10, 0}: "compute_90"} {
		got, err := Arch(cc[0], cc[1])
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := Arch(7, 5)
	require.ErrorContains(t, err, "7.5")
}

// The staged GEMV's padding keeps each 8-lane phase of a 16-byte shared
// load on 32 distinct banks, for every group size it can take.
func TestStagedStrideIsConflictFree(t *testing.T) {
	for gs := 4; gs <= 4096; gs += 4 {
		st := StagedStride(gs)
		require.Zero(t, st%4, "gs %d: 16-byte alignment", gs)
		for phase := range 4 {
			var banks [32]bool
			for l := phase * 8; l < phase*8+8; l++ {
				for w := range 4 {
					b := (l*st + w) % 32
					require.False(t, banks[b], "gs %d: lanes share bank %d", gs, b)
					banks[b] = true
				}
			}
		}
	}
}

func TestSimSource(t *testing.T) {
	src, err := SimSource("table.h")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(src), "// Code generated"))
	require.Contains(t, string(src), "#define MIXQ_SIM 1")
	require.Contains(t, string(src), "MIXQ_KERNEL mixq_gemv_xs(")
	require.True(t, strings.HasSuffix(string(src), "#include \"table.h\"\n"))
}
