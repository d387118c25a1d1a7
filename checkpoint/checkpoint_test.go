package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// shard is a file to build: tensors of the given dtypes with shape [n],
// holding bytes derived from the name so every tensor's contents differ.
type shard map[string]safetensors.DType

// writeShard writes tensors in the order given by names (the file order).
func writeShard(t testing.TB, path string, names []string, dtypes shard) {
	t.Helper()
	specs := make([]safetensors.Spec, len(names))
	for i, n := range names {
		specs[i] = safetensors.Spec{Name: n, DType: dtypes[n], Shape: []int64{int64(2 + i)}}
	}
	w, err := safetensors.Create(path, specs, map[string]string{"format": "pt"})
	require.NoError(t, err)
	for _, s := range specs {
		require.NoError(t, w.Write(s.Name, contents(s)))
	}
	require.NoError(t, w.Close())
}

func contents(s safetensors.Spec) []byte {
	b := make([]byte, s.Bytes())
	for i := range b {
		b[i] = byte(len(s.Name)*13 + i)
	}
	return b
}

func writeIndex(t testing.TB, dir string, weightMap map[string]string) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 123}, "weight_map": weightMap})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), raw, 0o644))
}

func writeConfig(t testing.TB, dir, config string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigName), []byte(config), 0o644))
}

func names(c *Checkpoint) []string {
	var out []string
	for _, t := range c.Tensors {
		out = append(out, t.Name)
	}
	return out
}

func TestOpenSingleFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "weights.safetensors")
	order := []string{"z.weight", "a.weight", "m.bias"}
	writeShard(t, path, order, shard{"z.weight": safetensors.F32, "a.weight": safetensors.BF16, "m.bias": safetensors.F16})

	c, err := Open(path, Options{})
	require.NoError(t, err)
	assert.Equal(t, path, c.Path)
	assert.Equal(t, dir, c.Dir)
	assert.Nil(t, c.Config, "no config.json")
	assert.Equal(t, order, names(c), "file order, not name order")
	assert.Equal(t, []string{path}, c.ShardFiles())
	for i, n := range order {
		tn, ok := c.Lookup(n)
		require.True(t, ok)
		assert.Same(t, c.Tensors[i], tn)
		assert.Equal(t, []int64{int64(2 + i)}, tn.Shape)
		assert.Equal(t, int64(2+i), tn.NumElements())
		assert.Equal(t, contents(safetensors.Spec{Name: n, DType: tn.DType, Shape: tn.Shape}), tn.Raw())
		tn.Release()
	}
	_, ok := c.Lookup("nope")
	assert.False(t, ok)
	require.NoError(t, c.Close())

	// With a config beside it.
	writeConfig(t, dir, `{"hidden_size": 64}`)
	c, err = Open(path, Options{})
	require.NoError(t, err)
	assert.JSONEq(t, `{"hidden_size": 64}`, string(c.Config))
	require.NoError(t, c.Close())
}

func TestOpenDirectoryWithoutIndex(t *testing.T) {
	one := shard{"w": safetensors.F32}

	dir := t.TempDir()
	writeShard(t, filepath.Join(dir, "only-one.safetensors"), []string{"w"}, one)
	c, err := Open(dir, Options{})
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "only-one.safetensors")}, c.ShardFiles())
	require.NoError(t, c.Close())

	// model.safetensors wins over stray files.
	writeShard(t, filepath.Join(dir, SingleName), []string{"w"}, one)
	c, err = Open(dir, Options{})
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, SingleName)}, c.ShardFiles())
	require.NoError(t, c.Close())

	// Two files and neither is model.safetensors: ambiguous.
	dir = t.TempDir()
	writeShard(t, filepath.Join(dir, "a.safetensors"), []string{"w"}, one)
	writeShard(t, filepath.Join(dir, "b.safetensors"), []string{"w"}, one)
	_, err = Open(dir, Options{})
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, "2 *.safetensors files (a.safetensors, b.safetensors) but no model.safetensors.index.json")

	// A directory name with glob metacharacters is just a name.
	odd := filepath.Join(t.TempDir(), "ckpt[1]*")
	require.NoError(t, os.Mkdir(odd, 0o755))
	writeShard(t, filepath.Join(odd, "w.safetensors"), []string{"w"}, one)
	c, err = Open(odd, Options{})
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(odd, "w.safetensors")}, c.ShardFiles())
	require.NoError(t, c.Close())

	_, err = Open(t.TempDir(), Options{})
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorContains(t, err, "no model.safetensors.index.json, model.safetensors or other *.safetensors file")

	_, err = Open(filepath.Join(dir, "missing"), Options{})
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// shardedDir builds a three-shard checkpoint whose index lists shards in
// an order different from their sorted names.
func shardedDir(t testing.TB) (string, map[string]string) {
	dir := t.TempDir()
	dt := shard{}
	files := map[string][]string{
		"model-00002-of-00003.safetensors": {"layers.1.b", "layers.1.a"},
		"model-00001-of-00003.safetensors": {"embed", "layers.0.w"},
		"model-00003-of-00003.safetensors": {"norm"},
	}
	weightMap := map[string]string{}
	for file, ns := range files {
		for _, n := range ns {
			dt[n] = safetensors.BF16
			weightMap[n] = file
		}
		writeShard(t, filepath.Join(dir, file), ns, dt)
	}
	writeIndex(t, dir, weightMap)
	writeConfig(t, dir, `{"model_type":"llama"}`)
	return dir, weightMap
}

func TestOpenSharded(t *testing.T) {
	dir, _ := shardedDir(t)
	for _, path := range []string{dir, filepath.Join(dir, IndexName)} {
		c, err := Open(path, Options{})
		require.NoError(t, err)
		assert.Equal(t, dir, c.Dir)
		assert.Equal(t, []string{"embed", "layers.0.w", "layers.1.b", "layers.1.a", "norm"}, names(c))
		assert.Equal(t, []string{
			filepath.Join(dir, "model-00001-of-00003.safetensors"),
			filepath.Join(dir, "model-00002-of-00003.safetensors"),
			filepath.Join(dir, "model-00003-of-00003.safetensors"),
		}, c.ShardFiles())
		assert.JSONEq(t, `{"model_type":"llama"}`, string(c.Config))
		tn, ok := c.Lookup("layers.1.a")
		require.True(t, ok)
		assert.Equal(t, filepath.Join(dir, "model-00002-of-00003.safetensors"), tn.File.Path())
		assert.Equal(t, contents(safetensors.Spec{Name: tn.Name, DType: tn.DType, Shape: tn.Shape}), tn.Raw())
		require.NoError(t, c.Close())
	}
}

func TestIndexInconsistencies(t *testing.T) {
	const s1, s2, s3 = "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"
	for _, tc := range []struct {
		name  string
		edit  func(t *testing.T, dir string, wm map[string]string)
		want  []string
		tname string // the *quant.TensorError's tensor, when one is at fault
	}{
		{"shard missing", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.Remove(filepath.Join(dir, s3)))
		}, []string{`names shard "` + s3 + `", which does not exist`}, ""},
		{"tensor in shard but not in map", func(t *testing.T, dir string, wm map[string]string) {
			delete(wm, "layers.0.w")
			writeIndex(t, dir, wm)
		}, []string{s1, "not listed in model.safetensors.index.json"}, "layers.0.w"},
		{"tensor mapped to another shard", func(t *testing.T, dir string, wm map[string]string) {
			wm["layers.1.a"] = s3
			writeIndex(t, dir, wm)
		}, []string{s2, `model.safetensors.index.json maps it to shard "` + s3 + `"`}, "layers.1.a"},
		{"mapped tensor absent from its shard", func(t *testing.T, dir string, wm map[string]string) {
			wm["ghost"] = s3
			wm["zombie"] = s1
			writeIndex(t, dir, wm)
		}, []string{s3, "maps it to this shard, which does not contain it (2 such tensors)"}, "ghost"},
		{"duplicate across shards", func(t *testing.T, dir string, wm map[string]string) {
			writeShard(t, filepath.Join(dir, s3), []string{"norm", "embed"}, shard{"norm": safetensors.BF16, "embed": safetensors.BF16})
		}, []string{s3, "duplicate tensor name, also in ", s1}, "embed"},
		{"path traversal", func(t *testing.T, dir string, wm map[string]string) {
			wm["norm"] = "../" + s3
			writeIndex(t, dir, wm)
		}, []string{`maps to "../` + s3 + `", which is not a plain file name`}, ""},
		{"subdirectory", func(t *testing.T, dir string, wm map[string]string) {
			wm["norm"] = "sub/" + s3
			writeIndex(t, dir, wm)
		}, []string{"not a plain file name"}, ""},
		{"absolute path", func(t *testing.T, dir string, wm map[string]string) {
			wm["norm"] = filepath.Join(dir, s3)
			writeIndex(t, dir, wm)
		}, []string{"not a plain file name"}, ""},
		{"dot dot", func(t *testing.T, dir string, wm map[string]string) {
			wm["norm"] = ".."
			writeIndex(t, dir, wm)
		}, []string{"not a plain file name"}, ""},
		{"backslash", func(t *testing.T, dir string, wm map[string]string) {
			wm["norm"] = `..\` + s3
			writeIndex(t, dir, wm)
		}, []string{"not a plain file name"}, ""},
		{"duplicate key in weight map", func(t *testing.T, dir string, wm map[string]string) {
			raw := fmt.Sprintf(`{"weight_map":{"norm":%q,"norm":%q}}`, s3, s3)
			require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), []byte(raw), 0o644))
		}, []string{`weight_map lists tensor "norm" twice`}, ""},
		{"shard name not a string", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"weight_map":{"norm":3}}`), 0o644))
		}, []string{`tensor "norm" maps to 3, not a file name`}, ""},
		{"no weight map", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"metadata":{}}`), 0o644))
		}, []string{`no "weight_map"`}, ""},
		{"weight map not an object", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"weight_map":[]}`), 0o644))
		}, []string{`"weight_map" must be an object`}, ""},
		{"empty weight map", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"weight_map":{}}`), 0o644))
		}, []string{"weight_map is empty"}, ""},
		{"index not JSON", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"weight_map":`), 0o644))
		}, []string{IndexName, "not a JSON object"}, ""},
		{"corrupt shard", func(t *testing.T, dir string, wm map[string]string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, s2), []byte("garbage!!"), 0o644))
		}, []string{s2, "header length"}, ""},
		{"invalid config", func(t *testing.T, dir string, wm map[string]string) {
			writeConfig(t, dir, `{"hidden_size": }`)
		}, []string{ConfigName, "not a valid JSON object"}, ""},
		{"config not an object", func(t *testing.T, dir string, wm map[string]string) {
			writeConfig(t, dir, `[1, 2]`)
		}, []string{ConfigName, "not a valid JSON object"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, wm := shardedDir(t)
			tc.edit(t, dir, wm)
			c, err := Open(dir, Options{})
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, quant.ErrInput)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
			var te *quant.TensorError
			if tc.tname != "" {
				require.True(t, errors.As(err, &te), "want a TensorError, got %v", err)
				assert.Equal(t, tc.tname, te.Tensor)
				assert.Equal(t, dir, filepath.Dir(te.File))
			}
		})
	}
}

func TestUnsupportedDType(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SingleName)
	writeShard(t, path, []string{"ok", "codes"}, shard{"ok": safetensors.F32, "codes": safetensors.I8})

	_, err := Open(dir, Options{})
	require.Error(t, err)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.Equal(t, fmt.Sprintf(`%s: tensor "codes": dtype I8 is not supported (supported: F32, F16, BF16)`, path), err.Error())

	_, err = Open(dir, Options{AllowedDTypes: []safetensors.DType{safetensors.F32}})
	assert.ErrorContains(t, err, "(supported: F32)")

	c, err := Open(dir, Options{AllowedDTypes: []safetensors.DType{safetensors.F32, safetensors.I8}})
	require.NoError(t, err)
	defer c.Close()
	codes, _ := c.Lookup("codes")
	err = codes.Float32(make([]float32, codes.NumElements()))
	assert.EqualError(t, err, fmt.Sprintf(`%s: tensor "codes": cannot convert dtype I8 to F32 (supported: F32, F16, BF16)`, path))
}

// storiesDir is the real model shared by the project's tests.
const storiesDir = "../../shared/testdata/stories260K"

func TestOpenStories260K(t *testing.T) {
	if _, err := os.Stat(storiesDir); err != nil {
		t.Skipf("stories260K test model not available: %v", err)
	}
	c, err := Open(storiesDir, Options{})
	require.NoError(t, err)
	defer c.Close()
	// Embedding and final norm, then nine tensors per layer; no lm_head
	// because the embeddings are tied.
	assert.Len(t, c.Tensors, 2+5*9)
	emb, ok := c.Lookup("model.embed_tokens.weight")
	require.True(t, ok)
	assert.Equal(t, []int64{512, 64}, emb.Shape)
	assert.Equal(t, safetensors.F32, emb.DType)
	dst := make([]float32, emb.NumElements())
	require.NoError(t, emb.Float32(dst))

	var cfg struct {
		HiddenSize int `json:"hidden_size"`
		VocabSize  int `json:"vocab_size"`
		Layers     int `json:"num_hidden_layers"`
	}
	require.NoError(t, json.Unmarshal(c.Config, &cfg))
	assert.Equal(t, 64, cfg.HiddenSize)
	assert.Equal(t, 512, cfg.VocabSize)
	assert.Equal(t, 5, cfg.Layers)
}
