package checkpoint

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
	"github.com/mixq/mixq/shards"
)

var indexSeeds = []string{
	`{"metadata":{"total_size":12},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}`,
	`{"weight_map":{"x":"a.safetensors","y":"a.safetensors"}}`,
	`{"weight_map":{"x":"a.safetensors","x":"b.safetensors"}}`,
	`{"weight_map":{"x":"../a.safetensors"}}`,
	`{"weight_map":{"x":"/etc/passwd"}}`,
	`{"weight_map":{"x":"c:a"}}`,
	`{"weight_map":{"x":"a\u0000"}}`,
	`{"weight_map":{"x":7}}`,
	`{"weight_map":{"x":{"y":"a.safetensors"}}}`,
	`{"weight_map":{}}`,
	`{"weight_map":[]}`,
	`{"metadata":{}}`,
	`[]`, `{`, ``,
}

// FuzzIndex fuzzes model.safetensors.index.json, parsed alone and as the
// index of a directory of two real shards (a.safetensors holds x,
// b.safetensors holds y). Properties: every refusal is an input error
// naming the index; an accepted index has a non-empty weight map whose
// shards are plain file names, sorted and unique, exactly the map's
// values; the map written back as mixq writes an index reads back
// identically; and when Open accepts the directory, the checkpoint holds
// exactly the mapped tensors, each from the shard the index names, never
// a file outside the directory.
func FuzzIndex(f *testing.F) {
	for _, s := range indexSeeds {
		f.Add([]byte(s))
	}
	// A real index as mixq writes it.
	l, err := shards.Plan([]safetensors.Spec{
		{Name: "x", DType: safetensors.F32, Shape: []int64{2}},
		{Name: "y", DType: safetensors.F16, Shape: []int64{2}},
	}, shards.Options{MaxShardSize: 8})
	require.NoError(f, err)
	require.NotNil(f, l.Index)
	f.Add(l.Index)
	dir := f.TempDir()
	writeShard(f, filepath.Join(dir, "a.safetensors"), []string{"x"}, shard{"x": safetensors.F32})
	writeShard(f, filepath.Join(dir, "b.safetensors"), []string{"y"}, shard{"y": safetensors.F16})
	f.Fuzz(func(t *testing.T, raw []byte) {
		names, wm, err := readIndex("idx.json", raw)
		if err != nil {
			require.True(t, errors.Is(err, quant.ErrInput), "%v", err)
			require.ErrorContains(t, err, "idx.json")
		} else {
			require.NotEmpty(t, wm)
			require.True(t, slices.IsSorted(names))
			require.Equal(t, names, slices.Compact(slices.Clone(names)))
			values := map[string]bool{}
			for _, s := range wm {
				require.True(t, plainName(s), "%q", s)
				require.Equal(t, s, filepath.Base(s))
				values[s] = true
			}
			require.Len(t, names, len(values))
			for _, s := range names {
				require.True(t, values[s], s)
			}
			back, err := json.Marshal(map[string]any{"metadata": map[string]int64{"total_size": 0}, "weight_map": wm})
			require.NoError(t, err)
			names2, wm2, err := readIndex("idx.json", back)
			require.NoError(t, err)
			require.Equal(t, names, names2)
			require.Equal(t, wm, wm2)
		}

		require.NoError(t, os.WriteFile(filepath.Join(dir, IndexName), raw, 0o644))
		c, openErr := Open(dir, Options{})
		if openErr != nil {
			require.True(t, errors.Is(openErr, quant.ErrInput), "%v", openErr)
			return
		}
		defer c.Close()
		require.NoError(t, err, "Open accepted an index readIndex refuses")
		require.Len(t, c.Tensors, len(wm))
		for _, tn := range c.Tensors {
			require.Equal(t, filepath.Join(dir, wm[tn.Name]), tn.File.Path())
			require.Equal(t, dir, filepath.Dir(tn.File.Path()))
		}
	})
}
