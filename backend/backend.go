package backend

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"plugin"
	"strconv"
	"strings"
	"sync"

	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/cuda/probe"
	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/gpu/sim"
	"github.com/mixq/mixq/quant"
)

// PluginEnv names the environment variable that overrides where the CUDA
// plugin is looked for.
const PluginEnv = "MIXQ_CUDA_PLUGIN"

// PluginName is the plugin's file name next to the mixq binary.
const PluginName = "mixq-cuda.so"

// Plugin is a loaded CUDA backend plugin.
type Plugin struct {
	Path  string
	Kind  string // "cuda", or "cuda-sim" for the emulator build
	Open  func(ordinal int, o gpu.Options) (quant.Backend, error)
	Bench func(gpu.BenchOptions) ([]gpu.BenchRow, error)
}

var (
	loadMu sync.Mutex
	loaded = map[string]*Plugin{}
)

// LoadPlugin opens the plugin at path and resolves its symbols. A plugin
// stays loaded for the life of the process, so repeated calls return the
// first result.
func LoadPlugin(path string) (*Plugin, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if p, ok := loaded[path]; ok {
		return p, nil
	}
	pl, err := plugin.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading the CUDA plugin: %w", err)
	}
	p := &Plugin{Path: path}
	kind, err := pl.Lookup("Kind")
	if err != nil {
		return nil, fmt.Errorf("CUDA plugin %s: %w", path, err)
	}
	ks, ok := kind.(*string)
	if !ok {
		return nil, fmt.Errorf("CUDA plugin %s: Kind is a %T, not a string", path, kind)
	}
	p.Kind = *ks
	open, err := pl.Lookup("Open")
	if err != nil {
		return nil, fmt.Errorf("CUDA plugin %s: %w", path, err)
	}
	if p.Open, ok = open.(func(int, gpu.Options) (quant.Backend, error)); !ok {
		return nil, fmt.Errorf("CUDA plugin %s: Open has type %T", path, open)
	}
	bench, err := pl.Lookup("Bench")
	if err != nil {
		return nil, fmt.Errorf("CUDA plugin %s: %w", path, err)
	}
	if p.Bench, ok = bench.(func(gpu.BenchOptions) ([]gpu.BenchRow, error)); !ok {
		return nil, fmt.Errorf("CUDA plugin %s: Bench has type %T", path, bench)
	}
	loaded[path] = p
	return p, nil
}

// PluginPath returns the plugin to load: $MIXQ_CUDA_PLUGIN, else
// mixq-cuda.so beside the executable, else ../lib/mixq/mixq-cuda.so from
// it. The error lists every place tried.
func PluginPath() (string, error) {
	if p := os.Getenv(PluginEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", PluginEnv, p, err)
		}
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating the CUDA plugin: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	dir := filepath.Dir(exe)
	tried := []string{filepath.Join(dir, PluginName), filepath.Join(dir, "..", "lib", "mixq", PluginName)}
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("CUDA plugin not found (tried %s; set %s)", strings.Join(tried, ", "), PluginEnv)
}

// Choice is a parsed --backend value.
type Choice struct {
	Kind    string // "auto", "cpu" or "cuda"
	Ordinal int    // the GPU for cuda (cuda:N), 0 by default
}

// Parse reads auto, cpu, cuda, cuda:N or cuda-sim. cuda-sim is the CUDA
// kernels and driver run by the CPU emulator of package gpu/sim: slow, for
// checking on machines without a GPU that the GPU code path writes the
// same bytes as the CPU.
func Parse(s string) (Choice, error) {
	switch s {
	case "auto", "cpu", "cuda", "cuda-sim":
		return Choice{Kind: s}, nil
	}
	if n, ok := strings.CutPrefix(s, "cuda:"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 {
			return Choice{Kind: "cuda", Ordinal: i}, nil
		}
	}
	return Choice{}, fmt.Errorf("backend %q: want auto, cpu, cuda or cuda:N", s)
}

// Open returns the backend for a --backend value. With auto, any reason
// the GPU cannot be used is written to notice as one line and the CPU
// backend is returned. With cuda, it is an input error.
func Open(s string, notice io.Writer) (quant.Backend, error) {
	c, err := Parse(s)
	if err != nil {
		return nil, quant.InputError(err)
	}
	switch c.Kind {
	case "cpu":
		return cpu.New(0), nil
	case "cuda-sim":
		return sim.New(gpu.Options{}), nil
	}
	be, err := openCUDA(c.Ordinal)
	if err == nil {
		return be, nil
	}
	if c.Kind == "cuda" {
		return nil, quant.InputError(fmt.Errorf("--backend cuda: %w", err))
	}
	if notice != nil {
		fmt.Fprintf(notice, "mixq: using the CPU backend: %v\n", err)
	}
	return cpu.New(0), nil
}

func openCUDA(ordinal int) (quant.Backend, error) {
	p, err := CUDAPlugin()
	if err != nil {
		return nil, err
	}
	devs := probe.Run().Devices // probed once per process; CUDAPlugin checked it
	if ordinal >= len(devs) {
		return nil, fmt.Errorf("no CUDA device %d (%d present)", ordinal, len(devs))
	}
	if cause := devs[ordinal].UnsupportedCause; cause != "" {
		return nil, fmt.Errorf("CUDA device %d (%s): %s", ordinal, devs[ordinal].Name, cause)
	}
	return p.Open(ordinal, gpu.Options{})
}

// Close releases a backend's device resources when it holds any.
func Close(be quant.Backend) error {
	if c, ok := be.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// CUDAPlugin returns the CUDA plugin, loaded, once the probe has found a
// device the kernels support; the error says which step failed. Open, the
// benchmarks and mixq devices all go through it.
func CUDAPlugin() (*Plugin, error) {
	r := probe.Run()
	if r.Err != nil {
		return nil, r.Err
	}
	if _, ok := r.Usable(); !ok {
		return nil, errors.New("no CUDA device the kernels support (compute capability 8.0 or newer)")
	}
	path, err := PluginPath()
	if err != nil {
		return nil, err
	}
	p, err := LoadPlugin(path)
	if err != nil {
		return nil, err
	}
	if p.Kind != "cuda" {
		return nil, fmt.Errorf("CUDA plugin %s is a %s build, not cuda", path, p.Kind)
	}
	return p, nil
}
