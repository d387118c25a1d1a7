//go:build linux

package mixq_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/internal/fault"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// Issue 9, defect 5: an input truncated while mixq reads it (another
// program rewrites it) used to kill the process with SIGBUS and leave the
// temporary behind. Now it is an error naming the file, and nothing stays.
func TestInputTruncatedWhileQuantizingIsAnError(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.BF16, safetensors.F32} {
		t.Run(string(dt), func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "m.safetensors")
			// Two tensors: one quantized (decoded over the cores) and one
			// kept as it is (copied from the mapping on the caller).
			specs := []safetensors.Spec{
				{Name: "model.layers.0.mlp.up_proj.weight", DType: dt, Shape: []int64{1024, 1024}},
				{Name: "model.norm.weight", DType: dt, Shape: []int64{1 << 20}},
			}
			w, err := safetensors.Create(in, specs, nil)
			require.NoError(t, err)
			for _, s := range specs {
				require.NoError(t, w.Write(s.Name, make([]byte, s.Bytes())))
			}
			require.NoError(t, w.Close())
			ck, err := mixq.Open(in)
			require.NoError(t, err)
			defer ck.Close()
			plan, err := mixq.PlanQuantization(ck, mixq.Options{})
			require.NoError(t, err)

			require.NoError(t, os.Truncate(in, 4096))
			out := filepath.Join(dir, "q")
			_, err = mixq.Quantize(context.Background(), ck, plan, out, mixq.Options{})
			require.Error(t, err)
			assert.ErrorIs(t, err, fault.ErrFault)
			assert.ErrorIs(t, err, quant.ErrInput)
			assert.Contains(t, err.Error(), in, "names the file")
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, ents, 1, "no output, no temporary")
		})
	}
}
