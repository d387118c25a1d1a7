package backend

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cuda/probe"
	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/quant/quanttest"
)

func gpuBenchOptions() gpu.BenchOptions { return gpu.BenchOptions{Quick: true} }

// The CUDA parity suite: every kernel family on every usable GPU against
// the CPU reference, bit for bit (fresh seed per run, printed; boundary
// sizes; golden vectors). It runs where cuda/probe finds a device and the
// plugin is found ($MIXQ_CUDA_PLUGIN, or beside the test binary); anywhere
// else it is skipped with the reason.
func TestCUDAConformance(t *testing.T) {
	r := probe.Run()
	if r.Err != nil {
		t.Skipf("GPU tests skipped: %v", r.Err)
	}
	if _, ok := r.Usable(); !ok {
		t.Skip("GPU tests skipped: no device the kernels support")
	}
	path, err := PluginPath()
	if err != nil {
		t.Skipf("GPU tests skipped: %v", err)
	}
	p, err := LoadPlugin(path)
	require.NoError(t, err)
	require.Equal(t, "cuda", p.Kind, "%s is not the CUDA build", path)
	for _, d := range r.Devices {
		if d.UnsupportedCause != "" {
			t.Logf("device %d (%s) skipped: %s", d.Ordinal, d.Name, d.UnsupportedCause)
			continue
		}
		t.Run(d.Name, func(t *testing.T) {
			be, err := p.Open(d.Ordinal, gpu.Options{})
			require.NoError(t, err)
			defer Close(be)
			t.Logf("%s: %s, compute %d.%d, PTX %s, driver %s", be.Name(), d.Name, d.Major, d.Minor, d.PTXArchitecture, gpu.DriverString(d.DriverVersion))
			quanttest.TestBackend(t, be)
			quanttest.TestGolden(t, be, goldenDir(t))
		})
		// Chunks of a few rows: every tensor crosses chunks on both streams,
		// which run concurrently on a GPU (in the emulator they cannot).
		t.Run(d.Name+" small chunks", func(t *testing.T) {
			be, err := p.Open(d.Ordinal, gpu.Options{ChunkBytes: 3000})
			require.NoError(t, err)
			defer Close(be)
			quanttest.TestBackend(t, be)
		})
	}
}

func goldenDir(t *testing.T) string {
	for _, d := range []string{os.Getenv("MIXQ_GOLDEN"), filepath.Join("..", "testdata", "golden"), filepath.Join("testdata", "golden")} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(d); err == nil {
			return d
		}
	}
	t.Fatal("golden vectors not found: set MIXQ_GOLDEN")
	return ""
}
