package ctensors

import (
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mixq/mixq/internal/safeout"
	"github.com/mixq/mixq/shards"
)

// weightExts are file name endings of weights, never copied as companions.
var weightExts = []string{".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx"}

// Companions lists the non-weight files of the given directories
// (tokenizer files, generation_config.json, chat templates, ...), the first
// directory winning when a name appears in several: every regular file but
// weights, config.json (which is rewritten), hidden files and mixq's marker.
func Companions(dirs ...string) ([]shards.Extra, error) {
	seen := map[string]bool{"config.json": true, safeout.MarkerName: true}
	var out []shards.Extra
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			name := e.Name()
			if seen[name] || strings.HasPrefix(name, ".") || !e.Type().IsRegular() || isWeight(name) {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return nil, err
			}
			seen[name] = true
			out = append(out, shards.Extra{Name: name, Src: filepath.Join(dir, name), Size: info.Size()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func isWeight(name string) bool {
	for _, ext := range weightExts {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}
