package backend

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/cuda/probe"
	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/quant/quanttest"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Choice{
		"auto": {Kind: "auto"}, "cpu": {Kind: "cpu"}, "cuda": {Kind: "cuda"}, "cuda:3": {Kind: "cuda", Ordinal: 3}, "cuda-sim": {Kind: "cuda-sim"},
	} {
		got, err := Parse(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"} {
		_, err := Parse(bad)
		require.Error(t, err, bad)
	}
	_, err := Open("gpu", nil)
	require.ErrorIs(t, err, quant.ErrInput)
}

func requireNoGPU(t *testing.T) probe.Result {
	r := probe.Run()
	if _, ok := r.Usable(); ok {
		t.Skip("this machine has a usable GPU; the fallback is tested on machines without one")
	}
	return r
}

// Without a GPU, auto gives the CPU and says why in one line.
func TestAutoFallsBack(t *testing.T) {
	r := requireNoGPU(t)
	var notice bytes.Buffer
	be, err := Open("auto", &notice)
	require.NoError(t, err)
	require.Equal(t, "cpu", be.Name())
	require.Equal(t, 1, strings.Count(notice.String(), "\n"), notice.String())
	require.Contains(t, notice.String(), "using the CPU backend")
	if r.Err != nil {
		require.Contains(t, notice.String(), r.Err.Error())
	}
}

// Without a GPU, cuda is an input error naming the reason.
func TestCUDAWithoutGPU(t *testing.T) {
	requireNoGPU(t)
	_, err := Open("cuda", nil)
	require.ErrorIs(t, err, quant.ErrInput)
	require.Contains(t, err.Error(), "--backend cuda")
}

// buildPlugin builds gpu/plugin with the flags of this test binary: a
// plugin loads only into a binary built from the same packages the same way.
func buildPlugin(t *testing.T, tags ...string) string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		t.Skipf("no go command to build the plugin with: %v", err)
	}
	out := filepath.Join(t.TempDir(), PluginName)
	args := []string{"build", "-buildmode=plugin", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, "github.com/mixq/mixq/gpu/plugin")
	cmd := exec.Command(goBin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the plugin: %s", msg)
	return out
}

// The plugin path works end to end: the emulator build of gpu/plugin is
// built, loaded with plugin.Open and its backend passes the golden vectors
// and the matmul cases, so the mechanism the CUDA plugin uses is exercised
// here, without a GPU.
func TestPluginLoads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin (-short)")
	}
	path := buildPlugin(t)
	p, err := LoadPlugin(path)
	require.NoError(t, err)
	require.Equal(t, "cuda-sim", p.Kind)
	again, err := LoadPlugin(path)
	require.NoError(t, err)
	require.Same(t, p, again)
	be, err := p.Open(0, gpu.Options{})
	require.NoError(t, err)
	defer Close(be)
	require.Equal(t, "cuda-sim", be.Name())
	quanttest.TestGolden(t, be, goldenDir(t))
	_, err = p.Bench(gpuBenchOptions())
	require.Error(t, err, "the emulator has no benchmarks")

	t.Setenv(PluginEnv, path)
	got, err := PluginPath()
	require.NoError(t, err)
	require.Equal(t, path, got)
	t.Setenv(PluginEnv, filepath.Join(t.TempDir(), "missing.so"))
	_, err = PluginPath()
	require.Error(t, err)
}

// A file that is not a plugin is a clear error, not a crash.
func TestLoadPluginBadFile(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.so")
	require.NoError(t, os.WriteFile(bad, []byte("not an ELF file"), 0o644))
	_, err := LoadPlugin(bad)
	require.Error(t, err)
	require.Contains(t, err.Error(), "loading the CUDA plugin")
	require.False(t, errors.Is(err, quant.ErrInput))
}
