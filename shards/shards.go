package shards

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/mixq/mixq/internal/infile"
	"github.com/mixq/mixq/internal/safeout"
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
	// Extra files are copied in as they are: the tokenizer and the other
	// files of a checkpoint that are not weights.
	Extra []Extra
}

// Extra is a file copied into the directory unchanged.
type Extra struct {
	Name string // file name in the directory
	Src  string // where it is copied from
	Size int64  // its size when planned; a file that changed since is an error
}

// TotalBytes is the exact size of every file the directory will hold,
// mixq's marker file (safeout.MarkerName) included.
func (l *Layout) TotalBytes() int64 {
	var n int64
	for _, f := range l.entries() {
		n += f.Size
	}
	return n + l.MarkerBytes()
}

// MarkerBytes is the size of mixq's marker in the directory, which lists
// every other file (see safeout.MarkerName).
func (l *Layout) MarkerBytes() int64 { return safeout.MarkerBytes(safeout.Directory, l.entries()) }

// CarriedBytes is what the extra files add to the directory: their bytes
// and their lines in the marker's manifest. TotalBytes less CarriedBytes is
// the size of the same directory without them, which is what size targets
// and compression ratios are about.
func (l *Layout) CarriedBytes() int64 {
	if len(l.Extra) == 0 {
		return 0
	}
	bare := *l
	bare.Extra = nil
	return l.TotalBytes() - bare.TotalBytes()
}

// entries are the files of the directory but the marker, with their sizes.
func (l *Layout) entries() []safeout.FileEntry {
	var fs []safeout.FileEntry
	for _, s := range l.Shards {
		fs = append(fs, safeout.FileEntry{Name: s.File, Size: s.Size})
	}
	if l.Index != nil {
		fs = append(fs, safeout.FileEntry{Name: IndexName, Size: int64(len(l.Index))})
	}
	if l.Config != nil {
		fs = append(fs, safeout.FileEntry{Name: "config.json", Size: int64(len(l.Config))})
	}
	for _, e := range l.Extra {
		fs = append(fs, safeout.FileEntry{Name: e.Name, Size: e.Size})
	}
	return fs
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
	dir    string
	out    *safeout.Dir
	tmp    string // out.Path()
	layout *Layout
	shard  int
	cur    *safetensors.Writer
	pos    int   // index of the tensor being written in the current shard
	rem    int64 // bytes still owed for it
	done   bool
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

// CreateLayout starts writing an already planned directory through
// safeout: an existing dir is an error unless replace is set, and even then
// it must be a directory mixq wrote (it holds the marker). It is replaced
// only when the new directory is complete, in one atomic step, so a failed
// or killed run leaves the old one intact.
func CreateLayout(dir string, l *Layout, replace bool) (*Writer, error) {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		if !replace {
			return nil, fmt.Errorf("%s: %w", dir, ErrExists)
		}
		if err := safeout.CheckReplace(dir, safeout.Directory, true); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out, err := safeout.NewDirFor(dir, safeout.Directory, replace)
	if err != nil {
		return nil, err
	}
	w := &Writer{dir: dir, out: out, tmp: out.Path(), layout: l, shard: -1}
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
	for _, e := range w.layout.Extra {
		if err := copyExtra(filepath.Join(w.tmp, e.Name), e); err != nil {
			return err
		}
	}
	return nil
}

// copyExtra copies one extra file, checking that it still has its planned
// size so that the estimate stays exact.
func copyExtra(dst string, e Extra) error {
	// infile refuses a FIFO or device put in the file's place since it was
	// planned (it would block the copy forever).
	src, _, err := infile.Open(e.Src)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(src, e.Size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s: %w", e.Src, err)
	}
	if n != e.Size {
		return fmt.Errorf("%s changed while mixq ran: %d bytes, %d when planned", e.Src, n, e.Size)
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
	if err := w.out.Commit(); err != nil {
		w.done = true
		return err
	}
	w.done = true
	return nil
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
	w.out.Abort()
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
	for _, e := range l.Extra {
		names = append(names, e.Name)
	}
	names = append(names, safeout.MarkerName)
	sort.Strings(names)
	return names
}
