package cpu_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/quant/quanttest"
)

// matmulKernels are the vector MatMul kernels this machine can run; each is
// checked against the plain-Go reference (cpu.Reference) bit for bit.
func matmulKernels(t testing.TB) map[string]*cpu.Backend {
	k := map[string]*cpu.Backend{}
	for _, name := range []string{"avx512", "avx2"} {
		if b, ok := cpu.New(0).WithMatMul(name); ok {
			k[name] = b
			k[name+"/split"], _ = cpu.NewGrain(3, 1).WithMatMul(name)
		}
	}
	if len(k) == 0 {
		t.Skipf("no vector MatMul kernels in this build (%s)", cpu.New(1).MatMulKernels())
	}
	return k
}

// simdLayouts are the shapes where the vector path's own boundaries lie:
// rows around the tile sizes (32, 64) and the vector widths (8, 16), columns
// around the transposer steps (32, 64) and past one column chunk (4096, odd
// INT4 groups whose chunks must start on a byte), group sizes that are odd,
// tiny, larger than a step and wider than a chunk's default.
func simdLayouts() []quant.Layout {
	var ls []quant.Layout
	ls = append(ls, quanttest.MatMulLayouts...)
	for _, p := range []quant.Precision{quant.INT8, quant.INT4} {
		for _, sh := range []struct{ rows, cols, g int }{
			{1, 64, 64}, {7, 31, 32}, {8, 32, 32}, {9, 33, 16}, {15, 63, 7}, {16, 64, 64},
			{17, 65, 128}, {31, 127, 3}, {32, 128, 128}, {33, 129, 128}, {63, 191, 1},
			{64, 256, 128}, {65, 257, 256}, {100, 300, 172}, {130, 4100, 128},
			{40, 8300, 4095}, {20, 9001, 7}, {70, 4096 + 64, 64}, {3, 8192, 4096},
		} {
			ls = append(ls, quant.Layout{Rows: sh.rows, Cols: sh.cols, GroupSize: sh.g, Precision: p})
		}
	}
	return ls
}

// TestMatMulKernels checks every vector kernel set against the reference on
// quantized weights and on arbitrary codes (every INT8 and INT4 value,
// including -128 and -8, and subnormal scales), for m = 1 to 9, 16, 64 and
// 130 (more than one block of rows of x, with a ragged last block).
func TestMatMulKernels(t *testing.T) {
	kernels := matmulKernels(t)
	seed := quanttest.Seed(t)
	ref := cpu.Reference()
	ms := []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 64, 130}
	for _, l := range simdLayouts() {
		name := fmt.Sprintf("%s g%d %dx%d", l.Precision, l.GroupSize, l.Rows, l.Cols)
		for _, m := range ms {
			if m > 64 && l.Elements() > 1<<18 {
				continue // blocks of rows of x: the small layouts suffice
			}
			if testing.Short() && m > 9 && l.Elements() > 1<<16 {
				continue
			}
			r := quanttest.NewRand(seed, fmt.Sprintf("MatMulKernels m=%d %s", m, name))
			x := quanttest.Activations(r, m, l.Cols)
			w := quanttest.Weights(r, l)
			scales := make([]uint16, l.NumScales())
			packed := make([]byte, l.PackedBytes())
			require.NoError(t, ref.GroupScales(scales, w, l))
			require.NoError(t, ref.Quantize(packed, w, scales, l))
			cases := map[string][2]any{
				"quantized": {packed, scales},
				"codes":     {quanttest.Codes(r, l), quanttest.Scales(r, l, 0x3c00)},
			}
			for what, c := range cases {
				p, s := c[0].([]byte), c[1].([]uint16)
				want := make([]float32, m*l.Rows)
				require.NoError(t, ref.MatMul(want, x, m, p, s, l))
				for kn, b := range kernels {
					got := make([]float32, m*l.Rows)
					for i := range got {
						got[i] = -7 // so that an output never written shows
					}
					require.NoError(t, b.MatMul(got, x, m, p, s, l))
					quanttest.RequireEqualBits(t, fmt.Sprintf("%s %s m=%d %s", kn, name, m, what), got, want)
				}
			}
		}
	}
}

// TestMatMulAsmGenerated checks that matmul_amd64.s is what its generator
// writes, so that the kernels are never edited by hand out of step with it.
func TestMatMulAsmGenerated(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 to run cpu/gen/matmul_asm.py")
	}
	out, err := exec.Command(py, "gen/matmul_asm.py").Output()
	require.NoError(t, err)
	have, err := os.ReadFile("matmul_amd64.s")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(out)), strings.TrimSpace(string(have)),
		"matmul_amd64.s is stale: run python3 cpu/gen/matmul_asm.py > cpu/matmul_amd64.s")
}

// TestConformanceMatMulKernels runs the whole conformance suite with each
// vector MatMul kernel set (TestConformance runs the default, the best this
// CPU has), split into many tiny chunks so that tiles straddle chunks.
func TestConformanceMatMulKernels(t *testing.T) {
	for _, name := range []string{"avx512", "avx2"} {
		b, ok := cpu.NewGrain(3, 1).WithMatMul(name)
		if !ok {
			t.Logf("no %s kernels on this machine or build", name)
			continue
		}
		t.Run(name, func(t *testing.T) { quanttest.TestBackend(t, b) })
	}
}

// FuzzMatMul checks every vector MatMul kernel set against the plain-Go
// reference on fuzzed codes, scales, activations and shapes (rows around the
// tile sizes, any group size, odd INT4 rows, m up to 17). Activations and
// scales are bounded so that no sum overflows: NaN payloads are outside the
// contract (docs/ARITHMETIC.md), every finite result is inside it.
func FuzzMatMul(f *testing.F) {
	f.Add([]byte{1, 2, 3, 0x81, 0x7f, 0xf0, 0x0f, 0x88}, uint8(5), uint16(300), uint8(128), uint8(1), false)
	f.Add([]byte{0x80, 0x7f, 0x01, 0xff}, uint8(64), uint16(65), uint8(7), uint8(9), true)
	f.Add([]byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe}, uint8(33), uint16(129), uint8(3), uint8(2), true)
	f.Add([]byte{0}, uint8(1), uint16(1), uint8(1), uint8(16), false)
	f.Fuzz(func(t *testing.T, data []byte, rsel uint8, csel uint16, gsel, msel uint8, int4 bool) {
		if len(data) == 0 {
			return
		}
		cols := int(csel)%300 + 1
		l := quant.Layout{Rows: int(rsel)%70 + 1, Cols: cols, GroupSize: int(gsel)%cols + 1, Precision: quant.INT8}
		if int4 {
			l.Precision = quant.INT4
		}
		m := int(msel)%17 + 1
		at := func(i int) byte { return data[i%len(data)] }
		packed := make([]byte, l.PackedBytes())
		for i := range packed {
			packed[i] = at(i) ^ byte(i>>8)
		}
		scales := make([]uint16, l.NumScales())
		for i := range scales {
			scales[i] = (uint16(at(2*i+1))<<8 | uint16(at(2*i))) % 0x3c01 // up to 1.0, subnormals included
		}
		x := make([]float32, m*cols)
		for i := range x {
			x[i] = float32(int8(at(3*i+7))) * float32(at(i+1)+1) / 64
		}
		want := make([]float32, m*l.Rows)
		require.NoError(t, cpu.Reference().MatMul(want, x, m, packed, scales, l))
		for _, name := range []string{"avx512", "avx2"} {
			b, ok := cpu.New(1).WithMatMul(name)
			if !ok {
				continue
			}
			got := make([]float32, m*l.Rows)
			require.NoError(t, b.MatMul(got, x, m, packed, scales, l))
			quanttest.RequireEqualBits(t, fmt.Sprintf("%s %s g%d %dx%d m=%d", name, l.Precision, l.GroupSize, l.Rows, l.Cols, m), got, want)
		}
	})
}

// TestMMArgsLayout checks the offsets the generated assembly reads the
// kernels' arguments at against the Go struct.
func TestMMArgsLayout(t *testing.T) {
	require.Equal(t, []uintptr{0, 32, 40, 72, 80, 88, 96, 104, 112, 120}, cpu.MMArgsOffsets,
		"mmArgs changed: update T0, SC, X0, ... in cpu/gen/matmul_asm.py")
}
