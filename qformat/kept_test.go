package qformat_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/qformat"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Issue 9 follow-up, C: a NaN or ±Inf in a tensor kept in floating point
// decoded silently, so dequantize and export passed it on with exit 0
// (eval refused it later). mixq never writes one: DecodeRange, and
// Float32 through it, refuse it naming the file, the tensor and the index.
func TestKeptNonFiniteValuesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dtype safetensors.DType
		bad   []byte
		want  string
	}{
		{"f16 +Inf", safetensors.F16, halves(0x3c00, 0x3c00, 0x7c00, 0), "+Inf at index 2"},
		{"bf16 NaN", safetensors.BF16, halves(0x3f80, 0x3f80, 0x7fc0, 0), "NaN at index 2"},
		{"f32 -Inf", safetensors.F32, append(binary.LittleEndian.AppendUint32(make([]byte, 8), math.Float32bits(float32(math.Inf(-1)))), 0, 0, 0, 0), "-Inf at index 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.safetensors")
			n := int64(len(tc.bad) / tc.dtype.Size())
			writeData(t, path, []safetensors.Spec{{Name: "n", DType: tc.dtype, Shape: []int64{n}}}, [][]byte{tc.bad}, map[string]string{
				qformat.FormatKey: qformat.Format,
				"mixq:n":          fmt.Sprintf(`{"precision":"keep","dtype":%q,"shape":[%d]}`, tc.dtype, n),
			})
			m, err := qformat.Open(path)
			require.NoError(t, err)
			defer m.Close()
			e, ok := m.Lookup("n")
			require.True(t, ok)

			dst := make([]float32, n)
			require.NoError(t, e.DecodeRange(dst, 0, 2), "the finite prefix decodes")
			for _, err := range []error{e.DecodeRange(dst, 1, 4), decodeAll(m)} {
				require.Error(t, err)
				assert.ErrorIs(t, err, quant.ErrInput)
				assert.Contains(t, err.Error(), path)
				assert.Contains(t, err.Error(), `tensor "n"`)
				assert.Contains(t, err.Error(), tc.want)
			}
		})
	}
}
