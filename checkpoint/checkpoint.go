package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mixq/mixq/internal/infile"
	"github.com/mixq/mixq/quant"
	"github.com/mixq/mixq/safetensors"
)

// IndexName is the index file of a sharded checkpoint.
const IndexName = "model.safetensors.index.json"

// SingleName is the conventional name of an unsharded checkpoint.
const SingleName = "model.safetensors"

// ConfigName is the model configuration beside the weights.
const ConfigName = "config.json"

// mixqFormatKey is the shard metadata key of a mixq output (qformat.FormatKey;
// qformat imports this package, so the key is repeated here).
const mixqFormatKey = "mixq.format"

// DefaultDTypes are the dtypes accepted when Options.AllowedDTypes is nil:
// the ones Tensor.Float32 converts.
var DefaultDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16}

// Options tunes Open.
type Options struct {
	// AllowedDTypes lists the dtypes a tensor may have; nil means
	// DefaultDTypes.
	AllowedDTypes []safetensors.DType
}

// Checkpoint is an opened set of safetensors shards.
type Checkpoint struct {
	// Path is the path given to Open.
	Path string
	// Dir is the directory holding the shards and config.json.
	Dir string
	// Config is the raw config.json, or nil when there is none.
	Config []byte
	// Tensors in a stable order: shards by sorted file name, then by
	// offset within the shard.
	Tensors []*Tensor

	files  []*safetensors.File
	byName map[string]*Tensor
}

// Tensor is one tensor of a checkpoint, a view into its shard's mapping.
type Tensor struct {
	Name  string
	DType safetensors.DType
	Shape []int64
	File  *safetensors.File
	Info  safetensors.TensorInfo
}

// Open opens the checkpoint at path, which is one of:
//
//   - a safetensors file (config.json is read from its directory if present);
//   - a directory holding model.safetensors.index.json, which names the
//     shards (plain file names in the directory) and maps every tensor to
//     its shard; the index and the shards must agree exactly;
//   - a directory without an index holding model.safetensors, or exactly
//     one *.safetensors file.
//
// Every tensor must have one of opt.AllowedDTypes, and names must be unique
// across shards. config.json, when present, must be a JSON object. Errors
// caused by the files are marked with quant.ErrInput and name the file (and
// the tensor, as a *quant.TensorError, when one is at fault).
//
// As a convenience, path may also be the index file itself, which stands for
// its directory.
func Open(path string, opt Options) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, quant.InputError(err)
	}
	c := &Checkpoint{Path: path, byName: map[string]*Tensor{}}
	var shards []string
	var weightMap map[string]string // nil without an index
	switch {
	case st.Mode().IsRegular() && filepath.Base(path) == IndexName:
		c.Dir = filepath.Dir(path)
		if shards, weightMap, err = findShards(c.Dir); err != nil {
			return nil, err
		}
	case st.Mode().IsRegular():
		c.Dir = filepath.Dir(path)
		shards = []string{filepath.Base(path)}
	case st.IsDir():
		c.Dir = path
		if shards, weightMap, err = findShards(path); err != nil {
			return nil, err
		}
	default:
		return nil, quant.InputError(fmt.Errorf("%s: not a regular file or a directory (%s)", path, infile.Kind(st.Mode())))
	}
	if c.Config, err = readConfig(c.Dir); err != nil {
		return nil, err
	}
	if err := c.openShards(shards, weightMap, allowed(opt)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func allowed(opt Options) []safetensors.DType {
	if opt.AllowedDTypes == nil {
		return DefaultDTypes
	}
	return opt.AllowedDTypes
}

// findShards decides which files of dir form the checkpoint. It returns the
// shard file names sorted, and the index's weight map when there is one.
func findShards(dir string) ([]string, map[string]string, error) {
	indexPath := filepath.Join(dir, IndexName)
	raw, err := readSmall(indexPath)
	switch {
	case err == nil:
		return readIndex(indexPath, raw)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, quant.InputError(err)
	}
	if st, err := os.Stat(filepath.Join(dir, SingleName)); err == nil && st.Mode().IsRegular() {
		return []string{SingleName}, nil, nil
	}
	// ReadDir rather than Glob: a directory name may contain glob
	// metacharacters.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, quant.InputError(err)
	}
	var matches []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".safetensors") && !e.IsDir() {
			matches = append(matches, e.Name())
		}
	}
	switch len(matches) {
	case 1:
		return matches, nil, nil
	case 0:
		return nil, nil, quant.InputError(fmt.Errorf("%s: no %s, %s or other *.safetensors file", dir, IndexName, SingleName))
	}
	return nil, nil, quant.InputError(fmt.Errorf("%s: %d *.safetensors files (%s) but no %s to say how they fit together",
		dir, len(matches), strings.Join(matches, ", "), IndexName))
}

// readIndex parses the index. The weight map is read token by token so a
// tensor listed twice is reported instead of the last entry silently
// winning.
func readIndex(path string, raw []byte) ([]string, map[string]string, error) {
	bad := func(format string, args ...any) error {
		return quant.InputError(fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, nil, bad("not a JSON object: %v", err)
	}
	wm, ok := top["weight_map"]
	if !ok {
		return nil, nil, bad("no \"weight_map\"")
	}
	dec := json.NewDecoder(bytes.NewReader(wm))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, bad("\"weight_map\" must be an object of tensor name to shard file name")
	}
	weightMap := map[string]string{}
	shardSet := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, bad("weight_map: %v", err)
		}
		name, _ := tok.(string) // keys of a valid object are strings
		if tok, err = dec.Token(); err != nil {
			return nil, nil, bad("weight_map: %v", err)
		}
		shard, ok := tok.(string)
		if !ok {
			return nil, nil, bad("weight_map: tensor %q maps to %v, not a file name", name, tok)
		}
		if _, dup := weightMap[name]; dup {
			return nil, nil, bad("weight_map lists tensor %q twice", name)
		}
		if !plainName(shard) {
			// Refuse anything that could reach outside the directory.
			return nil, nil, bad("weight_map: tensor %q maps to %q, which is not a plain file name in the directory", name, shard)
		}
		weightMap[name] = shard
		shardSet[shard] = true
	}
	if len(weightMap) == 0 {
		return nil, nil, bad("weight_map is empty")
	}
	shards := make([]string, 0, len(shardSet))
	for s := range shardSet {
		shards = append(shards, s)
	}
	slices.Sort(shards)
	return shards, weightMap, nil
}

// plainName reports whether s names a file directly inside a directory on
// every platform: no separators of either kind, no volume, not "." or "..".
func plainName(s string) bool {
	return s != "" && s != "." && s != ".." &&
		!strings.ContainsAny(s, `/\:`) && !strings.ContainsRune(s, 0) &&
		filepath.Base(s) == s
}

// MaxJSONSize bounds config.json and the shard index. Real ones are a few
// kB (an index of 100k tensors is under 10 MB); a larger file, or one that
// never ends (a link to /dev/zero), is refused instead of read into memory.
const MaxJSONSize = 64 << 20

// readSmall reads a regular file of at most MaxJSONSize bytes. A missing
// file gives an error satisfying errors.Is(err, fs.ErrNotExist); anything
// else that is wrong with it is an input error naming it.
func readSmall(path string) ([]byte, error) {
	return infile.ReadFile(path, MaxJSONSize, "configuration or index")
}

func readConfig(dir string) ([]byte, error) {
	path := filepath.Join(dir, ConfigName)
	raw, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, quant.InputError(err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, quant.InputError(fmt.Errorf("%s: not a valid JSON object: %w", path, err))
	}
	return raw, nil
}

// openShards opens every shard in order and checks the tensors against the
// dtype list, each other and the index.
func (c *Checkpoint) openShards(shards []string, weightMap map[string]string, dtypes []safetensors.DType) error {
	where := map[string]string{} // tensor name -> shard path, for duplicates
	for _, shard := range shards {
		path := filepath.Join(c.Dir, shard)
		f, err := safetensors.Open(path)
		if err != nil {
			if weightMap != nil && errors.Is(err, fs.ErrNotExist) {
				return quant.InputError(fmt.Errorf("%s names shard %q, which does not exist: %w", IndexName, shard, err))
			}
			return err
		}
		c.files = append(c.files, f)
		for _, info := range f.Header().Tensors {
			tensorErr := func(format string, args ...any) error {
				return quant.InputError(&quant.TensorError{File: path, Tensor: info.Name, Err: fmt.Errorf(format, args...)})
			}
			if prev, dup := where[info.Name]; dup {
				return tensorErr("duplicate tensor name, also in %s", prev)
			}
			where[info.Name] = path
			if weightMap != nil {
				mapped, ok := weightMap[info.Name]
				if !ok {
					return tensorErr("not listed in %s", IndexName)
				}
				if mapped != shard {
					return tensorErr("%s maps it to shard %q", IndexName, mapped)
				}
			}
			if !slices.Contains(dtypes, info.DType) {
				format := f.Header().Metadata[mixqFormatKey]
				if format != "" && !slices.Contains(dtypes, safetensors.I8) && !slices.Contains(dtypes, safetensors.U8) {
					// A mixq output given where an original checkpoint is
					// wanted (the caller takes no codes): say so rather
					// than blame the dtype.
					return quant.InputError(fmt.Errorf("%s is already quantized by mixq (%s; tensor %q is stored as %s): give the original checkpoint, or run mixq dequantize on this one first",
						path, format, info.Name, info.DType))
				}
				return tensorErr("dtype %s is not supported (supported: %s)", info.DType, joinDTypes(dtypes))
			}
			t := &Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, File: f, Info: info}
			c.Tensors = append(c.Tensors, t)
			c.byName[t.Name] = t
		}
	}
	if weightMap != nil {
		var missing []string
		for name := range weightMap {
			if _, ok := c.byName[name]; !ok {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			name := missing[0]
			return quant.InputError(&quant.TensorError{File: filepath.Join(c.Dir, weightMap[name]), Tensor: name,
				Err: fmt.Errorf("%s maps it to this shard, which does not contain it (%d such tensors)", IndexName, len(missing))})
		}
	}
	return nil
}

func joinDTypes(ds []safetensors.DType) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = string(d)
	}
	return strings.Join(s, ", ")
}

// Lookup finds a tensor by name.
func (c *Checkpoint) Lookup(name string) (*Tensor, bool) {
	t, ok := c.byName[name]
	return t, ok
}

// ShardFiles are the paths of the shard files, in tensor order.
func (c *Checkpoint) ShardFiles() []string {
	out := make([]string, len(c.files))
	for i, f := range c.files {
		out[i] = f.Path()
	}
	return out
}

// Close unmaps every shard; tensors' Raw data is invalid afterwards.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int64 { return t.Info.NumElements() }

// Raw is the tensor's little-endian bytes in the shard's read-only mapping,
// valid until the checkpoint is closed.
func (t *Tensor) Raw() []byte { return t.File.Data(t.Info) }

// Release drops the tensor's pages from memory (see safetensors.File.Release);
// Raw stays valid and reads back from the file.
func (t *Tensor) Release() { t.File.Release(t.Info) }

// Float32 converts the tensor to binary32 into dst, whose length must be
// NumElements. F32 is copied, BF16 widened by bits<<16, F16 widened exactly
// as github.com/x448/float16 does (NaN made quiet, payload kept); all three
// conversions are exact. Any other dtype is an error.
func (t *Tensor) Float32(dst []float32) error {
	if int64(len(dst)) != t.NumElements() {
		return &quant.TensorError{File: t.File.Path(), Tensor: t.Name,
			Err: fmt.Errorf("Float32 destination has %d elements, tensor has %d", len(dst), t.NumElements())}
	}
	if err := DecodeFloat32(dst, t.Raw(), t.DType); err != nil {
		return &quant.TensorError{File: t.File.Path(), Tensor: t.Name, Err: err}
	}
	return nil
}
