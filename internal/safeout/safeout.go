package safeout

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/mixq/mixq/quant"
)

// MarkerName is the file that marks a directory as mixq's own output. It
// says what kind of output the directory is and lists every file mixq put
// in it with its size (see MarkerBytes), so that --force replaces only
// that: a directory where the user has since added or changed a file is
// refused.
const MarkerName = ".mixq-output"

const markerHead = "This directory was written by mixq; `--force` lets mixq replace it.\n"

// FileEntry is one file of an output directory, for the marker's manifest.
type FileEntry struct {
	Name string
	Size int64
}

// markerContent renders the marker of a directory of the given kind that
// holds files (the marker itself excluded), in name order.
func markerContent(kind Kind, files []FileEntry) []byte {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b FileEntry) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	b.WriteString(markerHead)
	b.WriteString("kind: " + kind.tag() + "\n")
	b.WriteString("manifest:\n")
	for _, f := range files {
		fmt.Fprintf(&b, "file %d %s\n", f.Size, f.Name)
	}
	return []byte(b.String())
}

// tempMarker marks a directory being written: its kind, no manifest yet.
func tempMarker(kind Kind) []byte {
	return []byte(markerHead + "kind: " + kind.tag() + "\n")
}

// MarkerBytes is the exact size of the marker that a directory of this
// kind holding files will get, so that size estimates stay exact.
func MarkerBytes(kind Kind, files []FileEntry) int64 {
	return int64(len(markerContent(kind, files)))
}

// Notice receives one-line notices about cleanup (a removed leftover, a
// restored output). The command line points it at stderr.
var Notice = func(msg string) { fmt.Fprintln(os.Stderr, "mixq: "+msg) }

// Kind is the kind of output a command writes, which decides what --force
// may replace.
type Kind struct {
	// Name is used in messages ("a safetensors file").
	Name string
	// Dir is set for directory outputs (replaced only with the marker).
	Dir bool
	// Exts are the file name extensions an existing file must have to be
	// replaced (empty: any).
	Exts []string
	// Sniff, when set, checks the first bytes of an existing file.
	Sniff func(head []byte, size int64) bool
	// Tag names a directory kind in the marker ("checkpoint", "report"):
	// one kind of output never replaces another.
	Tag string
}

func (k Kind) tag() string {
	if k.Tag == "" {
		return "checkpoint"
	}
	return k.Tag
}

var (
	// Directory is a checkpoint directory that mixq writes (quantize,
	// dequantize, synth, a compressed-tensors export).
	Directory = Kind{Name: "mixq checkpoint directory", Dir: true, Tag: "checkpoint"}
	// Report is a report directory (report.json and charts).
	Report = Kind{Name: "mixq report directory", Dir: true, Tag: "report"}
	// Safetensors is a single .safetensors file.
	Safetensors = Kind{Name: "safetensors file", Exts: []string{".safetensors"}, Sniff: sniffSafetensors}
	// JSON is a single JSON file (an object or array).
	JSON = Kind{Name: "JSON file", Exts: []string{".json"}, Sniff: sniffJSON}
	// Float32 is a raw little-endian float32 file (eval's logits).
	Float32 = Kind{Name: "raw float32 file", Exts: []string{".f32", ".bin"}, Sniff: func(_ []byte, size int64) bool { return size%4 == 0 }}
	// PNG is a chart.
	PNG = Kind{Name: "PNG image", Exts: []string{".png"}, Sniff: func(h []byte, _ int64) bool { return bytes.HasPrefix(h, []byte("\x89PNG\r\n\x1a\n")) }}
	// GGUF is a single GGUF file.
	GGUF = Kind{Name: "GGUF file", Exts: []string{".gguf"}, Sniff: func(h []byte, _ int64) bool { return bytes.HasPrefix(h, []byte("GGUF")) }}
)

func sniffSafetensors(h []byte, size int64) bool {
	if len(h) < 9 {
		return false
	}
	n := binary.LittleEndian.Uint64(h)
	return n > 0 && n <= uint64(size-8) && h[8] == '{'
}

func sniffJSON(h []byte, _ int64) bool {
	h = bytes.TrimLeft(h, " \t\r\n")
	return len(h) > 0 && (h[0] == '{' || h[0] == '[')
}

// Check is the rule for an output path out of the given kind: it may not
// overlap any input (empty inputs are skipped), and an existing out is
// replaced only with force and only when mixq wrote it. Refusals are
// quant.ErrInput errors that say why.
func Check(out string, kind Kind, force bool, inputs ...string) error {
	if out == "" {
		return quant.InputError(errors.New("empty output path"))
	}
	if err := CheckDisjoint(out, inputs...); err != nil {
		return err
	}
	return CheckReplace(out, kind, force)
}

// CheckDisjoint refuses an output that is, contains, or lies inside one of
// the inputs.
func CheckDisjoint(out string, inputs ...string) error {
	ro, err := realPath(out)
	if err != nil {
		return err
	}
	ofi, oerr := os.Stat(out)
	for _, in := range inputs {
		if in == "" {
			continue
		}
		ri, err := realPath(in)
		if err != nil {
			return err
		}
		ifi, ierr := os.Stat(in)
		// An input that does not exist yet (another output of the same
		// command, such as the checkpoint a report goes beside) may become
		// a directory, so nothing may go inside it either.
		isDir := ierr != nil || ifi.IsDir()
		switch {
		case ro == ri || (oerr == nil && ierr == nil && os.SameFile(ofi, ifi)):
			return quant.InputError(fmt.Errorf("output %s is the input %s; choose another output path", out, in))
		case within(ri, ro):
			return quant.InputError(fmt.Errorf("output %s contains the input %s; choose another output path", out, in))
		case isDir && within(ro, ri):
			return quant.InputError(fmt.Errorf("output %s lies inside the input directory %s; choose a path outside it", out, in))
		}
	}
	return nil
}

// within reports whether path p lies strictly inside directory dir (both
// absolute and clean).
func within(p, dir string) bool {
	if dir == string(filepath.Separator) {
		return p != dir
	}
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}

// CheckReplace refuses an existing out unless force is set and out is an
// output of this kind that mixq wrote: a directory whose marker names this
// kind and lists exactly the files it holds, or a file carrying mixq's mark
// (see marked) with the kind's extension and first bytes.
func CheckReplace(out string, kind Kind, force bool) error {
	fi, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return envOrInput(out, err)
	}
	refuse := func(why string) error {
		return quant.InputError(fmt.Errorf("%s exists and %s; --force replaces only a %s that mixq wrote, so remove it yourself or choose another output", out, why, kind.Name))
	}
	if !force {
		if kind.Dir && fi.IsDir() {
			if why := dirMismatch(out, kind); why != "" {
				// --force would be refused too: say so now.
				return refuse(why)
			}
		}
		return quant.InputError(fmt.Errorf("%s already exists (use --force to replace it)", out))
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return refuse("is a symbolic link")
	case kind.Dir && !fi.IsDir():
		return refuse("is not a directory")
	case kind.Dir:
		if why := dirMismatch(out, kind); why != "" {
			return refuse(why)
		}
		return nil
	case !fi.Mode().IsRegular():
		return refuse("is not a regular file")
	}
	if len(kind.Exts) > 0 && !hasExt(out, kind.Exts) {
		return refuse(fmt.Sprintf("does not end in %s", strings.Join(kind.Exts, " or ")))
	}
	f, err := os.Open(out)
	if err != nil {
		return envOrInput(out, err)
	}
	defer f.Close()
	head := make([]byte, 64)
	n, _ := io.ReadFull(f, head)
	if kind.Sniff != nil && !kind.Sniff(head[:n], fi.Size()) {
		return refuse("does not look like a " + kind.Name)
	}
	if !marked(out) {
		return refuse("carries no mark that mixq wrote it (the " + markAttr + " extended attribute)")
	}
	return nil
}

// envOrInput classifies an error on an output path: a path through a
// regular file ("a.json/x") is the user's mistake, the rest (permissions,
// I/O) the environment's.
func envOrInput(p string, err error) error {
	if errors.Is(err, syscallENOTDIR) {
		return quant.InputError(fmt.Errorf("%s: a part of this path is a file, not a directory", p))
	}
	return err
}

// dirMismatch says why the directory out is not a mixq output of this kind
// that may be replaced as it is, or "" when it is.
func dirMismatch(out string, kind Kind) string {
	m, err := os.Lstat(filepath.Join(out, MarkerName))
	if err != nil || !m.Mode().IsRegular() {
		return "has no " + MarkerName + " marker, so mixq did not write it"
	}
	raw, err := os.ReadFile(filepath.Join(out, MarkerName))
	if err != nil {
		return "has a marker mixq cannot read (" + err.Error() + ")"
	}
	tag, files, ok := parseMarker(raw)
	if !ok {
		return "has a marker mixq cannot read"
	}
	if tag != kind.tag() {
		return fmt.Sprintf("is a mixq %s directory, not a %s", tag, kind.Name)
	}
	if files == nil {
		return "" // written while its files were being put in (a temporary)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return "cannot be listed (" + err.Error() + ")"
	}
	var extra, changed []string
	for _, e := range ents {
		name := e.Name()
		if name == MarkerName {
			continue
		}
		size, listed := files[name]
		fi, err := e.Info()
		switch {
		case !listed || err != nil:
			if e.IsDir() {
				name += "/"
			}
			extra = append(extra, name)
		case !fi.Mode().IsRegular() || fi.Size() != size:
			changed = append(changed, name)
		}
	}
	switch {
	case len(extra) > 0:
		return "holds files mixq did not write there (" + strings.Join(extra, ", ") + ")"
	case len(changed) > 0:
		return "holds files changed since mixq wrote them (" + strings.Join(changed, ", ") + ")"
	}
	return ""
}

// parseMarker reads a marker: its kind and its manifest (nil for a marker
// without one: a directory still being written, or an early mixq's).
func parseMarker(raw []byte) (tag string, files map[string]int64, ok bool) {
	text, found := strings.CutPrefix(string(raw), markerHead)
	if !found {
		return "", nil, false
	}
	tag = "checkpoint"
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case line == "":
		case strings.HasPrefix(line, "kind: "):
			tag = strings.TrimPrefix(line, "kind: ")
		case line == "manifest:":
			files = map[string]int64{}
		case strings.HasPrefix(line, "file "):
			sz, name, cut := strings.Cut(strings.TrimPrefix(line, "file "), " ")
			n, err := strconv.ParseInt(sz, 10, 64)
			if !cut || err != nil || name == "" {
				return "", nil, false
			}
			if files == nil {
				return "", nil, false
			}
			files[name] = n
		default:
			return "", nil, false
		}
	}
	return tag, files, true
}

func hasExt(p string, exts []string) bool {
	e := strings.ToLower(filepath.Ext(p))
	for _, x := range exts {
		if e == x {
			return true
		}
	}
	return false
}

// realPath makes p absolute with every existing symlink resolved, including
// those of its parents when p itself does not exist yet.
func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	for dir := abs; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest), nil
		}
		if filepath.Dir(dir) == dir {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// Temporary names: ".NAME.mixq-tmp-PID-RANDOM" and ".NAME.mixq-old-PID-RANDOM".
var leftover = regexp.MustCompile(`^\.(.+)\.mixq-(tmp|old)-([0-9]+)-[0-9]+$`)

func tempPattern(final, what string) string {
	return "." + filepath.Base(final) + ".mixq-" + what + "-" + strconv.Itoa(os.Getpid()) + "-*"
}

// Sweep removes the leftovers of mixq runs whose process is gone from dir,
// and puts back an output that was moved aside for a replacement that never
// arrived. Each action is reported through Notice. Errors are reported, not
// returned: a leftover that cannot be removed must not stop a new run.
func Sweep(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		m := leftover.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[3])
		if err != nil || alive(pid) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		// The owner holds a lock on its temporary for as long as it runs:
		// a pid that is gone here may be alive in another pid namespace (a
		// container) or on another host sharing the directory.
		if locked(p) {
			continue
		}
		if e.IsDir() && !removableDir(p) {
			Notice(fmt.Sprintf("left %s in place: it looks like a mixq temporary but has no %s marker", p, MarkerName))
			continue
		}
		if m[2] == "old" {
			final := filepath.Join(dir, m[1])
			if _, err := os.Lstat(final); errors.Is(err, fs.ErrNotExist) {
				if err := os.Rename(p, final); err != nil {
					Notice(fmt.Sprintf("could not restore %s from %s: %v", final, p, err))
				} else {
					Notice(fmt.Sprintf("restored %s, which an interrupted run (pid %d) had moved aside to %s", final, pid, p))
				}
				continue
			}
		}
		if err := os.RemoveAll(p); err != nil {
			Notice(fmt.Sprintf("could not remove %s, left by an interrupted run (pid %d): %v", p, pid, err))
			continue
		}
		Notice(fmt.Sprintf("removed %s, left by an interrupted run (pid %d)", p, pid))
	}
}

// removableDir holds for a directory mixq created: marked, or still empty
// (the marker is the first thing written).
func removableDir(p string) bool {
	if fi, err := os.Lstat(filepath.Join(p, MarkerName)); err == nil && fi.Mode().IsRegular() {
		return true
	}
	ents, err := os.ReadDir(p)
	return err == nil && len(ents) == 0
}

// CreateTemp creates the temporary file for final, in final's directory
// (created if needed), after sweeping that directory. The file is private
// until CommitFile.
func CreateTemp(final string) (*os.File, error) {
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, envOrInput(dir, err)
	}
	Sweep(dir)
	f, err := os.CreateTemp(dir, tempPattern(final, "tmp"))
	if err != nil {
		return nil, err
	}
	// Best effort: a file system without user extended attributes just
	// means --force will not replace this file later.
	setMark(f)
	// Held until the file is closed, so that no other run sweeps it.
	if err := lockFile(f); err != nil {
		AbortFile(f)
		return nil, err
	}
	return f, nil
}

// CheckWritable fails early, before any long work, when out cannot be
// created: its nearest existing ancestor directory is not writable (a
// read-only file system, missing permissions). That is the environment's
// problem, not the input's.
func CheckWritable(out string) error {
	for p := filepath.Dir(filepath.Clean(out)); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return quant.InputError(fmt.Errorf("%s: %s is a file, not a directory", out, p))
			}
			if err := writable(p); err != nil {
				return fmt.Errorf("cannot write %s: %s: %w", out, p, err)
			}
			return nil
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

// CommitFile makes the temporary file f readable, durable and puts it at
// final. rename(2) replaces a file atomically, so final always holds the
// old file or the new one. f is closed in every case; on error the
// temporary is removed.
func CommitFile(f *os.File, final string) error {
	err := f.Chmod(0o644)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), final)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	syncDir(filepath.Dir(final))
	return nil
}

// AbortFile closes and removes a temporary file from CreateTemp.
func AbortFile(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to final atomically through a temporary file.
func WriteFile(final string, data []byte) error {
	f, err := CreateTemp(final)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		AbortFile(f)
		return err
	}
	return CommitFile(f, final)
}

// WriteJSON writes v as indented JSON to final atomically.
func WriteJSON(final string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(final, append(b, '\n'))
}

// exchange swaps two paths atomically; a variable so that tests can take
// the fallback path of file systems without RENAME_EXCHANGE.
var exchange = exchangeSys

// Dir is an output directory being written under its temporary name.
type Dir struct {
	final, tmp string
	kind       Kind
	replace    bool
	done       bool
	lock       *os.File // held on tmp while this process writes it
	made       []string // parent directories this Dir created, deepest last
}

// NewDir starts writing the checkpoint directory final, which must not
// exist when it is committed (see NewDirFor).
func NewDir(final string) (*Dir, error) { return NewDirFor(final, Directory, false) }

// NewDirFor starts writing the directory final of the given kind: it sweeps
// final's parent, creates the temporary directory beside final and marks
// it. Write into Path, then Commit or Abort. replace is the user's
// --force: without it Commit refuses a final path that exists by then.
func NewDirFor(final string, kind Kind, replace bool) (*Dir, error) {
	final = filepath.Clean(final)
	parent := filepath.Dir(final)
	made, err := mkdirAll(parent)
	if err != nil {
		return nil, envOrInput(parent, err)
	}
	Sweep(parent)
	tmp, err := os.MkdirTemp(parent, tempPattern(final, "tmp"))
	if err != nil {
		removeMade(made)
		return nil, err
	}
	d := &Dir{final: final, tmp: tmp, kind: kind, replace: replace, made: made}
	if d.lock, err = lockPath(tmp); err != nil {
		d.Abort()
		return nil, err
	}
	// MkdirTemp makes the directory private; an output is an ordinary
	// directory like any checkpoint.
	if err := os.Chmod(tmp, 0o755); err != nil {
		d.Abort()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, MarkerName), tempMarker(kind), 0o644); err != nil {
		d.Abort()
		return nil, err
	}
	return d, nil
}

// Path is the temporary directory to write into.
func (d *Dir) Path() string { return d.tmp }

// Commit writes the marker's manifest, makes the temporary directory
// durable and puts it at the final path: atomically where nothing is there
// (RENAME_NOREPLACE: a directory that appeared meanwhile is not replaced
// without --force), or by an atomic exchange with the previous output,
// which is checked once more, so that the path always holds a complete
// directory.
func (d *Dir) Commit() error {
	if d.done {
		return errors.New("safeout: directory already committed or aborted")
	}
	defer d.unlock()
	if err := d.writeManifest(); err != nil {
		d.Abort()
		return err
	}
	if err := syncDir(d.tmp); err != nil {
		d.Abort()
		return err
	}
	err := renameNoReplace(d.tmp, d.final)
	if err == nil {
		d.done = true
		return syncDir(filepath.Dir(d.final))
	}
	if !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscallENOTEMPTY) {
		d.Abort()
		return err
	}
	// Something is at the final path: replace it only as the user allowed
	// and only if it is (still) a mixq output of this kind.
	if err := CheckReplace(d.final, d.kind, d.replace); err != nil {
		d.Abort()
		if !d.replace {
			return quant.InputError(fmt.Errorf("%s appeared while mixq was writing it and was left alone (use --force to replace it)", d.final))
		}
		return err
	}
	if err := exchange(d.tmp, d.final); err == nil {
		// d.tmp now holds the old output; a kill before it is removed
		// leaves it to the next Sweep.
		d.done = true
		syncDir(filepath.Dir(d.final))
		return os.RemoveAll(d.tmp)
	}
	old, err := os.MkdirTemp(filepath.Dir(d.final), tempPattern(d.final, "old"))
	if err != nil {
		d.Abort()
		return err
	}
	os.Remove(old) // only the unique name is wanted
	if err := os.Rename(d.final, old); err != nil {
		d.Abort()
		return err
	}
	if err := os.Rename(d.tmp, d.final); err != nil {
		os.Rename(old, d.final) // put the previous output back
		d.Abort()
		return err
	}
	d.done = true
	syncDir(filepath.Dir(d.final))
	return os.RemoveAll(old)
}

// writeManifest lists what the temporary directory holds in its marker.
func (d *Dir) writeManifest() error {
	ents, err := os.ReadDir(d.tmp)
	if err != nil {
		return err
	}
	var files []FileEntry
	for _, e := range ents {
		if e.Name() == MarkerName {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("safeout: %s in an output directory is not a regular file", e.Name())
		}
		files = append(files, FileEntry{e.Name(), fi.Size()})
	}
	p := filepath.Join(d.tmp, MarkerName)
	if err := os.WriteFile(p, markerContent(d.kind, files), 0o644); err != nil {
		return err
	}
	return nil
}

// Abort removes the temporary directory, and the parent directories that
// NewDirFor created for it if they are still empty. It is a no-op after
// Commit.
func (d *Dir) Abort() {
	if d.done {
		return
	}
	d.done = true
	os.RemoveAll(d.tmp)
	d.unlock()
	removeMade(d.made)
}

func (d *Dir) unlock() {
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
}

// mkdirAll is os.MkdirAll that returns the directories it created,
// outermost first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		missing = append(missing, p)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	slices.Reverse(missing)
	return missing, nil
}

// removeMade removes directories mkdirAll created, deepest first, as long
// as they are empty (os.Remove refuses otherwise).
func removeMade(made []string) {
	for i := len(made) - 1; i >= 0; i-- {
		if os.Remove(made[i]) != nil {
			return
		}
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	// Some file systems refuse to sync a directory; the data itself was
	// synced, so that is not worth failing over.
	_ = f.Sync()
	return nil
}
