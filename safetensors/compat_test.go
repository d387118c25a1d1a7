package safetensors

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	ref "github.com/nlpodyssey/safetensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The reference implementation knows every dtype except the F8 ones.
func refKnows(d DType) bool { return d != F8E4M3 && d != F8E5M2 }

// checkAgainstReference requires the independent implementation to read
// file exactly as h describes it. It is called on files we accept, so it
// also checks that we are never laxer than the reference; the reference is
// laxer than us in places (duplicate keys, unknown fields), which is why
// the converse is not checked.
func checkAgainstReference(t testing.TB, h *Header, file []byte) {
	t.Helper()
	for _, ti := range h.Tensors {
		if !refKnows(ti.DType) {
			return
		}
		if ti.NumElements() == 0 {
			// The reference multiplies the dimensions left to right with
			// overflow checks, so it rejects [huge, huge, 0], which holds
			// zero elements; skip the comparison rather than accept a
			// spurious difference.
			n := uint64(1)
			for _, d := range ti.Shape {
				if d != 0 && n > (1<<64-1)/uint64(d) {
					return
				}
				n *= max(uint64(d), 1)
			}
		}
	}
	st, err := ref.Deserialize(file)
	require.NoError(t, err, "the reference rejects a file we accept")
	require.Equal(t, len(h.Tensors), st.Len())
	for _, ti := range h.Tensors {
		view, ok := st.Tensor(ti.Name)
		require.True(t, ok, ti.Name)
		require.Equal(t, string(ti.DType), view.DType().String(), ti.Name)
		require.Equal(t, toU64(ti.Shape), view.Shape(), ti.Name)
		require.Equal(t, file[h.DataStart+ti.Begin:h.DataStart+ti.End], view.Data(), ti.Name)
	}
}

func toU64(s []int64) []uint64 {
	out := make([]uint64, len(s))
	for i, v := range s {
		out[i] = uint64(v)
	}
	return out
}

func TestReferenceReadsOurFiles(t *testing.T) {
	var specs []Spec
	for _, s := range sampleSpecs() {
		if refKnows(s.DType) {
			specs = append(specs, s)
		}
	}
	data := randomData(4, specs)
	path := writeFile(t, t.TempDir(), specs, sampleMetadata, data, 5)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)

	st, err := ref.Deserialize(raw)
	require.NoError(t, err)
	require.Equal(t, len(specs), st.Len())
	for i, s := range specs {
		view, ok := st.Tensor(s.Name)
		require.True(t, ok, s.Name)
		assert.Equal(t, string(s.DType), view.DType().String(), s.Name)
		assert.Equal(t, toU64(s.Shape), view.Shape(), s.Name)
		assert.Equal(t, data[i], view.Data(), s.Name)
	}
	_, meta, err := ref.ReadMetadata(raw)
	require.NoError(t, err)
	assert.Equal(t, sampleMetadata, meta.Metadata())
}

func TestWeReadReferenceFiles(t *testing.T) {
	type tensor struct {
		dtype ref.DType
		shape []uint64
	}
	tensors := map[string]tensor{
		"a.weight":        {ref.F32, []uint64{3, 4}},
		"b.bias":          {ref.F16, []uint64{5}},
		"c":               {ref.BF16, []uint64{2, 2, 2}},
		"d<html>&":        {ref.I64, []uint64{1}}, // not [], which the reference's NewTensorView counts as 0 elements
		"e.empty":         {ref.F32, []uint64{0, 7}},
		"f":               {ref.U8, []uint64{3}},
		"g":               {ref.BOOL, []uint64{1}},
		"h":               {ref.F64, []uint64{2}},
		"i":               {ref.I32, []uint64{2}},
		"j\u00e9\"quoted": {ref.I16, []uint64{3}},
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range tensors {
			if !yield(k) {
				return
			}
		}
	})
	views := map[string]ref.TensorView{}
	want := map[string][]byte{}
	for i, name := range names {
		tt := tensors[name]
		n := tt.dtype.Size()
		for _, d := range tt.shape {
			n *= d
		}
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(i*31 + j*7)
		}
		v, err := ref.NewTensorView(tt.dtype, tt.shape, data)
		require.NoError(t, err)
		views[name] = v
		want[name] = data
	}
	meta := map[string]string{"format": "pt", "x<y>": "&"}
	for _, withMeta := range []bool{true, false} {
		m := meta
		if !withMeta {
			m = nil
		}
		raw, err := ref.Serialize(views, m)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "ref.safetensors")
		require.NoError(t, os.WriteFile(path, raw, 0o644))

		f, err := Open(path)
		require.NoError(t, err)
		h := f.Header()
		checkInvariants(t, h, int64(len(raw)))
		assert.Equal(t, m, h.Metadata)
		require.Len(t, h.Tensors, len(tensors))
		for _, name := range names {
			ti, ok := h.Lookup(name)
			require.True(t, ok, name)
			assert.Equal(t, tensors[name].dtype.String(), string(ti.DType), name)
			assert.Equal(t, tensors[name].shape, toU64(ti.Shape), name)
			assert.Equal(t, want[name], f.Data(ti), name)
		}
		require.NoError(t, f.Close())
	}
}
