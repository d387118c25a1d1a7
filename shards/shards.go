package shards

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/mixq/mixq/safetensors"
)

// IndexName is the shard index file name used by Hugging Face.
const IndexName = "model.safetensors.index.json"

// Options controls the layout of the directory.
type Options struct {
	// MaxShardSize is the most tensor data bytes per shard; 0 means a single
	// file. A tensor larger than the limit gets a shard of its own.
	MaxShardSize int64
	// Config is written as config.json when non-nil.
	Config []byte
	// Metadata goes into the __metadata__ of every shard.
	Metadata map[string]string
	// TensorMetadata holds per-tensor entries, keyed by tensor name; each is
	// stored in the __metadata__ of the shard that holds the tensor, under
	// the key given by MetadataKey.
	TensorMetadata map[string]string
	// MetadataKey maps a tensor name to its metadata key (default: the name).
	MetadataKey func(tensor string) string
}

// Shard is one planned file.
type Shard struct {
	File     string
	Specs    []safetensors.Spec
	Metadata map[string]string
	Size     int64 // exact file size
}

// Layout is the plan of a whole directory.
type Layout struct {
	Shards []Shard
	Index  []byte // nil for a single file
	Config []byte
}

// TotalBytes is the exact size of every file the directory will hold.
func (l *Layout) TotalBytes() int64 {
	n := int64(len(l.Index) + len(l.Config))
	for _, s := range l.Shards {
		n += s.Size
	}
	return n
}

// Plan assigns tensors to shards in order and computes every file's bytes.
func Plan(specs []safetensors.Spec, opt Options) (*Layout, error) {
	key := opt.MetadataKey
	if key == nil {
		key = func(s string) string { return s }
	}
	var groups [][]safetensors.Spec
	var cur []safetensors.Spec
	var curBytes int64
	for _, s := range specs {
		b := s.Bytes()
		if opt.MaxShardSize > 0 && len(cur) > 0 && curBytes+b > opt.MaxShardSize {
			groups = append(groups, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, s)
		curBytes += b
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	l := &Layout{Config: opt.Config}
	weightMap := map[string]string{}
	var total int64
	seen := map[string]bool{}
	for _, sp := range specs {
		if seen[sp.Name] {
			return nil, fmt.Errorf("tensor %q would be written twice", sp.Name)
		}
		seen[sp.Name] = true
	}
	for i, g := range groups {
		name := "model.safetensors"
		if len(groups) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups))
		}
		md := map[string]string{}
		for k, v := range opt.Metadata {
			md[k] = v
		}
		for _, s := range g {
			if v, ok := opt.TensorMetadata[s.Name]; ok {
				md[key(s.Name)] = v
			}
			weightMap[s.Name] = name
			total += s.Bytes()
		}
		if len(md) == 0 {
			md = nil
		}
		size, err := safetensors.FileSize(g, md)
		if err != nil {
			return nil, err
		}
		l.Shards = append(l.Shards, Shard{File: name, Specs: g, Metadata: md, Size: size})
	}
	if len(groups) > 1 {
		idx, err := encodeIndex(total, weightMap)
		if err != nil {
			return nil, err
		}
		l.Index = idx
	}
	return l, nil
}

// encodeIndex renders the index deterministically (encoding/json sorts map keys).
func encodeIndex(total int64, weightMap map[string]string) ([]byte, error) {
	v := struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{map[string]int64{"total_size": total}, weightMap}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Writer streams tensors into a planned directory.
type Writer struct {
	dir, tmp string
	layout   *Layout
	shard    int
	cur      *safetensors.Writer
	pos      int   // index of the tensor being written in the current shard
	rem      int64 // bytes still owed for it
	done     bool
	replace  bool
}

// Create plans the directory and starts writing it under a temporary name.
// dir must not exist.
func Create(dir string, specs []safetensors.Spec, opt Options) (*Writer, error) {
	l, err := Plan(specs, opt)
	if err != nil {
		return nil, err
	}
	return CreateLayout(dir, l, false)
}

// ErrExists is returned when the output exists and replacing was not asked for.
var ErrExists = errors.New("output already exists (use --force to replace it)")

// CreateLayout starts writing an already planned directory. An existing dir
// is an error unless replace is set; then it is replaced only when the new
// directory is complete, so a failed run leaves the old one intact.
func CreateLayout(dir string, l *Layout, replace bool) (*Writer, error) {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		if !replace {
			return nil, fmt.Errorf("%s: %w", dir, ErrExists)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, err
	}
	// MkdirTemp makes the directory private; the result is an ordinary
	// directory like any checkpoint.
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	w := &Writer{dir: dir, tmp: tmp, layout: l, shard: -1, replace: replace}
	if err := w.writeSmallFiles(); err != nil {
		w.Abort()
		return nil, err
	}
	if err := w.next(); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

func (w *Writer) writeSmallFiles() error {
	if w.layout.Config != nil {
		if err := os.WriteFile(filepath.Join(w.tmp, "config.json"), w.layout.Config, 0o644); err != nil {
			return err
		}
	}
	if w.layout.Index != nil {
		if err := os.WriteFile(filepath.Join(w.tmp, IndexName), w.layout.Index, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// next closes the current shard and opens the following one.
func (w *Writer) next() error {
	if w.cur != nil {
		if err := w.cur.Close(); err != nil {
			return err
		}
		w.cur = nil
	}
	w.shard++
	if w.shard >= len(w.layout.Shards) {
		return nil
	}
	s := w.layout.Shards[w.shard]
	cur, err := safetensors.Create(filepath.Join(w.tmp, s.File), s.Specs, s.Metadata)
	if err != nil {
		return err
	}
	w.cur, w.pos = cur, -1
	return w.advance()
}

// advance moves to the next tensor of the shard, completing empty tensors on
// the way (they have no bytes to wait for), and to the next shard at the end.
func (w *Writer) advance() error {
	specs := w.layout.Shards[w.shard].Specs
	for {
		w.pos++
		if w.pos >= len(specs) {
			return w.next()
		}
		w.rem = specs[w.pos].Bytes()
		if w.rem > 0 {
			return nil
		}
		if err := w.cur.Write(specs[w.pos].Name, nil); err != nil {
			return err
		}
	}
}

// Write appends data to tensor name. Tensors come in planned order; one
// tensor may arrive in several consecutive chunks.
func (w *Writer) Write(name string, data []byte) error {
	if w.cur == nil {
		return fmt.Errorf("write of %q after the last tensor", name)
	}
	sh := w.layout.Shards[w.shard]
	if want := sh.Specs[w.pos].Name; name != want {
		return fmt.Errorf("tensor %q written out of order: %s expects %q next", name, sh.File, want)
	}
	if int64(len(data)) > w.rem {
		return fmt.Errorf("tensor %q: %d bytes written past its size", name, int64(len(data))-w.rem)
	}
	if err := w.cur.Write(name, data); err != nil {
		return err
	}
	w.rem -= int64(len(data))
	if w.rem == 0 {
		return w.advance()
	}
	return nil
}

// Close finishes the last shard and renames the directory into place.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	if w.cur != nil {
		// An empty trailing shard (no tensors) still needs closing; a shard
		// with missing bytes fails here.
		if err := w.cur.Close(); err != nil {
			w.Abort()
			return err
		}
		w.cur = nil
		w.shard++
	}
	if w.shard < len(w.layout.Shards) {
		w.Abort()
		return fmt.Errorf("%s: %d shards were never written", w.dir, len(w.layout.Shards)-w.shard)
	}
	if err := syncDir(w.tmp); err != nil {
		w.Abort()
		return err
	}
	old := ""
	if w.replace {
		var err error
		if old, err = w.moveOldAside(); err != nil {
			w.Abort()
			return err
		}
	}
	if err := os.Rename(w.tmp, w.dir); err != nil {
		if old != "" {
			os.Rename(old, w.dir) // put the previous output back
		}
		w.Abort()
		return err
	}
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			return err
		}
	}
	w.done = true
	return syncDir(filepath.Dir(w.dir))
}

// moveOldAside renames an existing output out of the way and returns its
// new name ("" when there was none). It is deleted only once the new
// directory is in place.
func (w *Writer) moveOldAside() (string, error) {
	if _, err := os.Lstat(w.dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	old := w.tmp + ".old"
	return old, os.Rename(w.dir, old)
}

// Abort removes everything written so far.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.cur != nil {
		w.cur.Abort()
	}
	os.RemoveAll(w.tmp)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Files lists the files of a layout in a stable order, for reporting.
func (l *Layout) Files() []string {
	var names []string
	for _, s := range l.Shards {
		names = append(names, s.File)
	}
	if l.Index != nil {
		names = append(names, IndexName)
	}
	if l.Config != nil {
		names = append(names, "config.json")
	}
	sort.Strings(names)
	return names
}
