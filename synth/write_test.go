package synth

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
)

// readBack opens every shard of the checkpoint in dir and returns a copy
// of each tensor's bytes with its header entry, and the metadata of the
// first shard.
func readBack(t *testing.T, dir string) (map[string]safetensors.TensorInfo, map[string][]byte, map[string]string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	infos := map[string]safetensors.TensorInfo{}
	data := map[string][]byte{}
	var meta map[string]string
	for _, path := range files {
		f, err := safetensors.Open(path)
		require.NoError(t, err)
		if meta == nil {
			meta = f.Header().Metadata
		}
		for _, ti := range f.Header().Tensors {
			_, dup := infos[ti.Name]
			require.False(t, dup, "tensor %s in two shards", ti.Name)
			infos[ti.Name] = ti
			data[ti.Name] = bytes.Clone(f.Data(ti))
		}
		require.NoError(t, f.Close())
	}
	return infos, data, meta
}

// checkCheckpoint verifies that dir holds exactly the preset's tensors,
// with the bytes that FillTensor and encode give.
func checkCheckpoint(t *testing.T, dir string, opt Options, dtype safetensors.DType) {
	t.Helper()
	infos, data, meta := readBack(t, dir)
	specs := opt.Preset.Specs(dtype)
	require.Len(t, infos, len(specs))
	for _, s := range specs {
		ti, ok := infos[s.Name]
		require.True(t, ok, "missing %s", s.Name)
		assert.Equal(t, s.DType, ti.DType, s.Name)
		assert.Equal(t, s.Shape, ti.Shape, s.Name)
		assert.Equal(t, s.Bytes(), ti.End-ti.Begin, s.Name)
		vals := make([]float32, numel(&s))
		FillTensor(vals, s, opt.Seed, 0)
		want := make([]byte, s.Bytes())
		encode(want, vals, dtype)
		if !bytes.Equal(want, data[s.Name]) {
			t.Fatalf("%s: bytes differ from FillTensor", s.Name)
		}
	}
	assert.Equal(t, opt.Preset.Name, meta["mixq.synth.preset"])
	assert.Equal(t, "pt", meta["format"])
	cfg, err := opt.Preset.Config(dtype)
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	assert.Equal(t, string(cfg), string(got))
}

func TestWriteTiny(t *testing.T) {
	for _, name := range []string{"tiny", "tiny-moe"} {
		for _, dt := range []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32} {
			t.Run(name+"/"+string(dt), func(t *testing.T) {
				p, err := Lookup(name)
				require.NoError(t, err)
				var progress int64
				opt := Options{Preset: p, Seed: 17, DType: dt, Progress: func(d int64) { progress += d }}
				dir := filepath.Join(t.TempDir(), "ckpt")
				start := time.Now()
				require.NoError(t, Write(dir, opt))
				took := time.Since(start)
				t.Logf("wrote %s in %v", name, took)
				assert.Less(t, took, time.Second)
				checkCheckpoint(t, dir, opt, dt)
				var total int64
				for _, s := range p.Specs(dt) {
					total += s.Bytes()
				}
				assert.Equal(t, total, progress, "progress adds up to the tensor bytes")
			})
		}
	}
}

func TestWriteDefaultDType(t *testing.T) {
	p, _ := Lookup("tiny")
	dir := filepath.Join(t.TempDir(), "ckpt")
	opt := Options{Preset: p}
	require.NoError(t, Write(dir, opt))
	checkCheckpoint(t, dir, opt, safetensors.BF16)
}

// TestWriteDeterministic writes the same checkpoint with different
// GOMAXPROCS and compares the files byte for byte; another seed differs.
func TestWriteDeterministic(t *testing.T) {
	p, _ := Lookup("tiny-moe")
	base := t.TempDir()
	write := func(name string, seed uint64, procs int) []byte {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		dir := filepath.Join(base, name)
		require.NoError(t, Write(dir, Options{Preset: p, Seed: seed}))
		b, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
		require.NoError(t, err)
		return b
	}
	a := write("a", 1, 1)
	b := write("b", 1, 4)
	c := write("c", 2, 2)
	assert.True(t, bytes.Equal(a, b), "same seed, different GOMAXPROCS")
	assert.False(t, bytes.Equal(a, c), "different seed")
	assert.Equal(t, len(a), len(c))
}

// TestWriteLargeTensor crosses chunk boundaries: a vocabulary of 9000
// makes the embedding 9000·64 = 576000 elements, more than one chunk.
func TestWriteLargeTensor(t *testing.T) {
	p, _ := Lookup("tiny")
	p.Vocab = 9000
	p.Name = "tiny-vocab9000"
	dir := filepath.Join(t.TempDir(), "ckpt")
	opt := Options{Preset: p, Seed: 3, DType: safetensors.F32}
	require.Greater(t, int64(p.Vocab*p.Hidden), int64(chunkElems))
	require.NoError(t, Write(dir, opt))
	checkCheckpoint(t, dir, opt, safetensors.F32)
}

func TestWriteSharded(t *testing.T) {
	p, _ := Lookup("tiny-moe")
	dir := filepath.Join(t.TempDir(), "ckpt")
	opt := Options{Preset: p, Seed: 5, MaxShardSize: 100 << 10}
	require.NoError(t, Write(dir, opt))
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	require.NoError(t, err)
	assert.Greater(t, len(files), 1)
	assert.FileExists(t, filepath.Join(dir, shards.IndexName))
	checkCheckpoint(t, dir, opt, safetensors.BF16)
}

func TestWriteErrors(t *testing.T) {
	p, _ := Lookup("tiny")
	base := t.TempDir()

	err := Write(filepath.Join(base, "a"), Options{Preset: p, DType: safetensors.I8})
	assert.True(t, errors.Is(err, quant.ErrInput), "%v", err)
	assert.NoDirExists(t, filepath.Join(base, "a"))

	err = Write(filepath.Join(base, "b"), Options{Preset: p.WithLayers(0)})
	assert.True(t, errors.Is(err, quant.ErrInput), "%v", err)
	assert.NoDirExists(t, filepath.Join(base, "b"))

	existing := filepath.Join(base, "c")
	require.NoError(t, os.Mkdir(existing, 0o755))
	assert.Error(t, Write(existing, Options{Preset: p}))

	// Nothing but the existing directory is left behind.
	entries, err := os.ReadDir(base)
	require.NoError(t, err)
	assert.Len(t, entries, 1)
}

// failingWriter fails its n-th Write and counts the chunks it saw.
type failingWriter struct {
	n, calls int
	bytes    int64
}

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(name string, data []byte) error {
	w.calls++
	if w.calls == w.n {
		return errDiskFull
	}
	w.bytes += int64(len(data))
	return nil
}

// TestStreamError stops a write of the seed preset (hundreds of chunks)
// after a few chunks: stream returns the error promptly and leaves no
// goroutine running.
func TestStreamError(t *testing.T) {
	p, _ := Lookup("seed")
	specs := p.Specs(safetensors.BF16)
	before := runtime.NumGoroutine()
	for _, n := range []int{1, 2, 5, 40} {
		w := &failingWriter{n: n}
		var progress int64
		err := stream(context.Background(), w, specs, 1, func(d int64) { progress += d })
		assert.ErrorIs(t, err, errDiskFull)
		assert.Equal(t, n, w.calls, "no write after the failure")
		assert.Equal(t, w.bytes, progress, "progress counts only the written chunks")
	}
	// The goroutines have finished their work when stream returns; give
	// them a moment to exit after their WaitGroup.Done.
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before stream, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// TestStreamChunks checks the chunking of stream: consecutive chunks of at
// most chunkElems elements covering each tensor, in order.
func TestStreamChunks(t *testing.T) {
	specs := []safetensors.Spec{
		{Name: "a", DType: safetensors.F32, Shape: []int64{3, chunkElems}},
		{Name: "b", DType: safetensors.BF16, Shape: []int64{7}},
		{Name: "c", DType: safetensors.F16, Shape: []int64{chunkElems + 1}},
	}
	var got []string
	var sizes []int
	rec := writerFunc(func(name string, data []byte) error {
		got = append(got, name)
		sizes = append(sizes, len(data))
		return nil
	})
	require.NoError(t, stream(context.Background(), rec, specs, 0, nil))
	assert.Equal(t, []string{"a", "a", "a", "b", "c", "c"}, got)
	assert.Equal(t, []int{4 * chunkElems, 4 * chunkElems, 4 * chunkElems, 14, 2 * chunkElems, 2}, sizes)
}

type writerFunc func(name string, data []byte) error

func (f writerFunc) Write(name string, data []byte) error { return f(name, data) }
