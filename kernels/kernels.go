package kernels

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
)

//go:embed *.cu *.cuh
var sources embed.FS

//go:embed ptx
var ptx embed.FS

// Kernel entry points, by family (the .cu file, without extension, that
// defines them). Every argument of every kernel is a 64-bit word.
const (
	GroupScales    = "mixq_group_scales"
	QuantizeGroups = "mixq_quantize_groups"
	Quantize       = "mixq_quantize"
	Dequantize     = "mixq_dequantize"
	GEMV           = "mixq_gemv"
	GEMVStaged     = "mixq_gemv_xs"
	GEMM           = "mixq_gemm"
	ChannelWelford = "mixq_channel_welford"
	MinMajor       = 8 // the oldest compute capability the PTX targets

	// StagedFloats is the shared memory of mixq_gemv_xs, in floats: it
	// takes M rows of 32 groups of x, each StagedStride floats long.
	StagedFloats = 12288

	familyScales   = "scales"
	familyQuantize = "quantize"
	familyDequant  = "dequantize"
	familyMatMul   = "matmul"
	familyStats    = "stats"
)

var family = map[string]string{
	GroupScales:    familyScales,
	QuantizeGroups: familyQuantize,
	Quantize:       familyQuantize,
	Dequantize:     familyDequant,
	GEMV:           familyMatMul,
	GEMVStaged:     familyMatMul,
	GEMM:           familyMatMul,
	ChannelWelford: familyStats,
}

// Family returns the family (module) that defines kernel name.
func Family(name string) (string, error) {
	f, ok := family[name]
	if !ok {
		return "", fmt.Errorf("kernels: unknown kernel %q", name)
	}
	return f, nil
}

// StagedStride is xs_stride of matmul.cu: the floats mixq_gemv_xs gives
// one group of x in shared memory, padded so that the lanes' 16-byte reads
// are free of bank conflicts (gs a multiple of 4).
func StagedStride(gs int) int {
	if gs&4 != 0 {
		return gs + 8
	}
	return gs + 4
}

// Families lists the kernel families in a fixed order.
func Families() []string {
	return []string{familyScales, familyQuantize, familyDequant, familyMatMul, familyStats}
}

// Arch picks the PTX target for a device of compute capability
// major.minor: compute_90 for Hopper and later, compute_80 for Ampere and
// Ada. Older devices are refused: the kernels are only built for sm_80+.
func Arch(major, minor int) (string, error) {
	switch {
	case major >= 9:
		return "compute_90", nil
	case major >= MinMajor:
		return "compute_80", nil
	}
	return "", fmt.Errorf("kernels: compute capability %d.%d is older than %d.0, the oldest the PTX targets", major, minor, MinMajor)
}

// PTX returns the PTX text of a family for an architecture.
func PTX(arch, fam string) (string, error) {
	b, err := ptx.ReadFile(path.Join("ptx", arch, fam+".ptx"))
	if err != nil {
		return "", fmt.Errorf("kernels: no PTX for %s/%s (run make ptx): %w", arch, fam, err)
	}
	return string(b), nil
}

// Sources returns the kernel sources by file name: mixq.cuh and the .cu
// files, sorted by name.
func Sources() (names []string, text map[string]string, err error) {
	text = map[string]string{}
	err = fs.WalkDir(sources, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := sources.ReadFile(p)
		if err != nil {
			return err
		}
		names = append(names, p)
		text[p] = string(b)
		return nil
	})
	slices.Sort(names)
	return names, text, err
}
