package shards

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/internal/safeout"

	"github.com/mixq/mixq/safetensors"
)

func specs() []safetensors.Spec {
	return []safetensors.Spec{
		{Name: "a", DType: safetensors.F32, Shape: []int64{10, 10}}, // 400 B
		{Name: "empty", DType: safetensors.F32, Shape: []int64{0, 4}},
		{Name: "b", DType: safetensors.F16, Shape: []int64{100}}, // 200 B
		{Name: "c", DType: safetensors.U8, Shape: []int64{300}},  // 300 B
	}
}

func writeAll(t *testing.T, w *Writer, sp []safetensors.Spec) {
	t.Helper()
	for _, s := range sp {
		if s.Bytes() == 0 {
			continue
		}
		data := make([]byte, s.Bytes())
		for i := range data {
			data[i] = byte(i)
		}
		// Two chunks, to exercise streaming.
		require.NoError(t, w.Write(s.Name, data[:len(data)/2]))
		require.NoError(t, w.Write(s.Name, data[len(data)/2:]))
	}
}

func TestShardedLayoutMatchesDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	opt := Options{MaxShardSize: 500, Config: []byte("{}\n"), Metadata: map[string]string{"k": "v"},
		TensorMetadata: map[string]string{"c": "rec"}}
	l, err := Plan(specs(), opt)
	require.NoError(t, err)
	require.Len(t, l.Shards, 2, "a+empty (400) | b+c (500) with a 500-byte limit")
	w, err := CreateLayout(dir, l, false)
	require.NoError(t, err)
	assert.NoDirExists(t, dir, "nothing appears under the final name before Close")
	writeAll(t, w, specs())
	require.NoError(t, w.Close())

	var total int64
	for _, f := range l.Files() {
		fi, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		total += fi.Size()
	}
	assert.Equal(t, l.TotalBytes(), total)

	var idx struct {
		Metadata  map[string]int64
		WeightMap map[string]string `json:"weight_map"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, IndexName))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &idx))
	assert.Equal(t, int64(900), idx.Metadata["total_size"])
	assert.Equal(t, "model-00002-of-00002.safetensors", idx.WeightMap["c"])

	f, err := safetensors.Open(filepath.Join(dir, "model-00002-of-00002.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, "rec", f.Header().Metadata["c"])
	assert.Equal(t, "v", f.Header().Metadata["k"])
}

func TestSingleFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	w, err := Create(dir, specs(), Options{})
	require.NoError(t, err)
	writeAll(t, w, specs())
	require.NoError(t, w.Close())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 2)
	assert.Equal(t, safeout.MarkerName, ents[0].Name(), "the marker that lets --force replace it later")
	assert.Equal(t, "model.safetensors", ents[1].Name())
}

func TestAbortAndIncompleteLeaveNothing(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	w, err := Create(dir, specs(), Options{MaxShardSize: 500})
	require.NoError(t, err)
	require.NoError(t, w.Write("a", make([]byte, 400)))
	assert.Error(t, w.Write("c", make([]byte, 300)), "out of order")
	assert.Error(t, w.Close(), "incomplete")
	assertEmpty(t, parent)

	w, err = Create(dir, specs(), Options{})
	require.NoError(t, err)
	assert.Error(t, w.Write("a", make([]byte, 401)), "too long")
	w.Abort()
	assertEmpty(t, parent)
}

func TestReplace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "old"), nil, 0o644))
	_, err := Create(dir, specs(), Options{})
	require.ErrorIs(t, err, ErrExists)

	l, err := Plan(specs(), Options{})
	require.NoError(t, err)
	// Without mixq's marker the directory is not ours to replace.
	_, err = CreateLayout(dir, l, true)
	require.ErrorContains(t, err, "marker")
	assert.FileExists(t, filepath.Join(dir, "old"))

	// A directory mixq wrote, holding just what its marker lists, is.
	require.NoError(t, os.Remove(filepath.Join(dir, "old")))
	require.NoError(t, os.Remove(dir))
	w, err := CreateLayout(dir, l, false)
	require.NoError(t, err)
	writeAll(t, w, specs())
	require.NoError(t, w.Close())
	marker, err := os.ReadFile(filepath.Join(dir, safeout.MarkerName))
	require.NoError(t, err)
	assert.Contains(t, string(marker), "kind: checkpoint\nmanifest:\nfile 1148 model.safetensors\n")
	assert.Equal(t, l.TotalBytes(), dirSize(t, dir), "the estimate counts the marker exactly")

	l2, err := Plan(specs(), Options{Config: []byte("{}\n")})
	require.NoError(t, err)
	w, err = CreateLayout(dir, l2, true)
	require.NoError(t, err)
	writeAll(t, w, specs())
	assert.NoFileExists(t, filepath.Join(dir, "config.json"), "the old output stays until the new one is complete")
	require.NoError(t, w.Close())
	assert.FileExists(t, filepath.Join(dir, "config.json"))
	assertEmpty(t, filepath.Dir(dir), "out")

	// A file the user added since is not mixq's to delete.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), []byte("mine"), 0o644))
	_, err = CreateLayout(dir, l, true)
	require.ErrorContains(t, err, "holds files mixq did not write there (adapter_model.safetensors)")
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		require.NoError(t, err)
		n += fi.Size()
	}
	return n
}

func assertEmpty(t *testing.T, dir string, except ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		ok := false
		for _, x := range except {
			ok = ok || e.Name() == x
		}
		assert.True(t, ok, "left behind: %s", e.Name())
	}
}

func TestPlanRejectsDuplicateNames(t *testing.T) {
	sp := []safetensors.Spec{{Name: "x", DType: safetensors.U8, Shape: []int64{4}}, {Name: "x", DType: safetensors.U8, Shape: []int64{4}}}
	_, err := Plan(sp, Options{MaxShardSize: 4})
	assert.ErrorContains(t, err, `"x"`)
}

func TestOutputIsWorldReadable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	w, err := Create(dir, specs(), Options{})
	require.NoError(t, err)
	writeAll(t, w, specs())
	require.NoError(t, w.Close())
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
}
