package checkpoint

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// config.json and the index are read whole, so one that is huge, or never
// ends (a link to /dev/zero), is refused, naming it, instead of exhausting
// memory or blocking.
func TestOversizedOrEndlessJSONIsRefused(t *testing.T) {
	for _, name := range []string{ConfigName, IndexName} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeShard(t, filepath.Join(dir, SingleName), []string{"x"}, shard{"x": safetensors.F32})
			p := filepath.Join(dir, name)
			f, err := os.Create(p)
			require.NoError(t, err)
			require.NoError(t, f.Truncate(MaxJSONSize+1)) // sparse: costs no disk
			require.NoError(t, f.Close())
			_, err = Open(dir, Options{})
			require.ErrorIs(t, err, quant.ErrInput)
			assert.ErrorContains(t, err, name)
			assert.ErrorContains(t, err, "larger than 64 MiB")

			if _, err := os.Stat("/dev/zero"); err != nil {
				t.Skip("no /dev/zero")
			}
			require.NoError(t, os.Remove(p))
			require.NoError(t, os.Symlink("/dev/zero", p))
			_, err = Open(dir, Options{})
			require.ErrorIs(t, err, quant.ErrInput)
			assert.ErrorContains(t, err, "not a regular file")
		})
	}
}
