package checkpoint

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Companion is a file of a checkpoint that is not weights (the tokenizer,
// generation_config.json, a chat template, a README), which every output
// carries along unchanged so that the output stays a complete model.
type Companion struct {
	Name string // file name in the checkpoint directory
	Path string // its path
	Size int64
}

// Skipped is a file of the checkpoint directory that is not carried, and why.
type Skipped struct {
	Name, Why string
}

// weightExts are the file kinds that hold weights in formats other than the
// shards being read; they are never copied (they would be stale or huge),
// but listed, so that nothing disappears silently.
var weightExts = []string{".bin", ".pt", ".pth", ".ckpt", ".gguf", ".ggml", ".h5", ".msgpack", ".onnx", ".safetensors", ".npz", ".tflite", ".ot"}

// fileCompanions are the names carried beside a single-file input, whose
// directory may hold anything (a Downloads folder): the files Hugging Face
// tokenizers and generation read, and nothing else.
func fileCompanion(name string) bool {
	lower := strings.ToLower(name)
	switch lower {
	case "special_tokens_map.json", "generation_config.json", "added_tokens.json", "merges.txt",
		"preprocessor_config.json", "processor_config.json", "spiece.model", "sentencepiece.bpe.model":
		return true
	}
	return strings.HasPrefix(lower, "tokenizer") || strings.HasPrefix(lower, "vocab.") ||
		strings.HasPrefix(lower, "chat_template")
}

// Companions lists the files an output of c carries: for a directory
// checkpoint every regular file (symlinks followed) that is not a weight
// shard, the shard index, config.json (every output writes its own) or a
// hidden file; for a single-file input only the tokenizer and generation
// files beside it. exclude names more files to leave out (an output's own
// files, such as mixq's marker). Files left out for a reason a user should
// hear (weights in another format, sub-directories) come back as skipped.
func (c *Checkpoint) Companions(exclude ...string) (carry []Companion, skipped []Skipped, err error) {
	st, err := os.Stat(c.Path)
	if err != nil {
		return nil, nil, err
	}
	single := !st.IsDir() && filepath.Base(c.Path) != IndexName
	ents, err := os.ReadDir(c.Dir)
	if err != nil {
		return nil, nil, err
	}
	own := map[string]bool{ConfigName: true, IndexName: true}
	for _, p := range c.ShardFiles() {
		if filepath.Dir(p) == filepath.Clean(c.Dir) {
			own[filepath.Base(p)] = true
		}
	}
	for _, x := range exclude {
		own[x] = true
	}
	for _, e := range ents {
		name := e.Name()
		if own[name] || strings.HasPrefix(name, ".") {
			continue
		}
		if single && !fileCompanion(name) {
			continue
		}
		p := filepath.Join(c.Dir, name)
		fi, err := os.Stat(p) // follows symlinks, as in a Hugging Face cache snapshot
		if err != nil {
			skipped = append(skipped, Skipped{name, fmt.Sprintf("unreadable: %v", err)})
			continue
		}
		switch {
		case fi.IsDir():
			skipped = append(skipped, Skipped{name, "a directory (only top-level files are carried)"})
		case !fi.Mode().IsRegular():
			skipped = append(skipped, Skipped{name, "not a regular file"})
		case isWeightFile(name):
			skipped = append(skipped, Skipped{name, "weights not read by mixq (another format, or a shard the index does not name)"})
		default:
			carry = append(carry, Companion{Name: name, Path: p, Size: fi.Size()})
		}
	}
	return carry, skipped, nil
}

func isWeightFile(name string) bool {
	lower := strings.ToLower(name)
	if strings.HasSuffix(lower, ".index.json") {
		return true // pytorch_model.bin.index.json and friends
	}
	return slices.Contains(weightExts, filepath.Ext(lower))
}
