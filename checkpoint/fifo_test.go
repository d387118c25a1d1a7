package checkpoint

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mixq/mixq/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openWithin opens path and fails the test when Open does not return within
// a few seconds: opening a FIFO for reading waits for a writer forever.
func openWithin(t *testing.T, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := Open(path, Options{})
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Open still blocked after 5 s")
		return nil
	}
}

func TestOpenRefusesFIFOsAndDevices(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir string) string // returns the file at fault
	}{
		{"fifo weights", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, SingleName)
			require.NoError(t, unix.Mkfifo(p, 0o644))
			return p
		}},
		{"device weights", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, SingleName)
			require.NoError(t, os.Symlink("/dev/zero", p))
			return p
		}},
		{"fifo config", func(t *testing.T, dir string) string {
			require.NoError(t, os.Remove(filepath.Join(dir, ConfigName)))
			p := filepath.Join(dir, ConfigName)
			require.NoError(t, unix.Mkfifo(p, 0o644))
			writeTiny(t, filepath.Join(dir, SingleName))
			return p
		}},
		{"fifo index", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, IndexName)
			require.NoError(t, unix.Mkfifo(p, 0o644))
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, ConfigName), []byte(`{"model_type":"llama"}`), 0o644))
			bad := tc.make(t, dir)
			err := openWithin(t, dir)
			require.Error(t, err)
			assert.ErrorIs(t, err, quant.ErrInput)
			assert.Contains(t, err.Error(), bad)
			assert.Contains(t, err.Error(), "not a regular file")
		})
	}
}

// writeTiny writes a valid one-tensor safetensors file.
func writeTiny(t *testing.T, path string) {
	t.Helper()
	hdr := `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	b := make([]byte, 8, 8+len(hdr)+4)
	b[0] = byte(len(hdr))
	b = append(append(b, hdr...), 0, 0, 0, 0)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func TestOpenRefusesFIFOGivenAsThePath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, unix.Mkfifo(p, 0o644))
	err := openWithin(t, p)
	require.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), p)
	assert.Contains(t, err.Error(), "named pipe")
}
