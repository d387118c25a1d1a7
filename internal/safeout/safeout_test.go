package safeout

import (
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/quant"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

// capture collects the notices of one test.
func capture(t *testing.T) *[]string {
	var got []string
	old := Notice
	Notice = func(m string) { got = append(got, m) }
	t.Cleanup(func() { Notice = old })
	return &got
}

func TestCheckDisjoint(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	write(t, filepath.Join(in, "model.safetensors"), "weights")
	write(t, filepath.Join(in, "config.json"), "{}")
	file := filepath.Join(root, "solo.safetensors")
	write(t, file, "w")
	require.NoError(t, os.Symlink(in, filepath.Join(root, "link")))
	require.NoError(t, os.Link(file, filepath.Join(root, "hard.safetensors")))

	for _, tc := range []struct {
		out, in, why string
	}{
		{in, in, "is the input"},
		{filepath.Join(in, "model.safetensors"), in, "lies inside"},
		{filepath.Join(in, "config.json"), in, "lies inside"},
		{filepath.Join(in, "sub", "q"), in, "lies inside"},
		{root, in, "contains the input"},
		{file, file, "is the input"},
		{filepath.Join(root, "link", "q"), in, "lies inside"},           // through a symlink
		{filepath.Join(root, "hard.safetensors"), file, "is the input"}, // a hard link
		{root, file, "contains the input"},
	} {
		err := CheckDisjoint(tc.out, tc.in)
		if assert.Error(t, err, "%s vs %s", tc.out, tc.in) {
			assert.ErrorIs(t, err, quant.ErrInput)
			assert.Contains(t, err.Error(), tc.why)
		}
	}
	// Beside the input is fine, for a file input too.
	assert.NoError(t, CheckDisjoint(filepath.Join(root, "q"), in))
	assert.NoError(t, CheckDisjoint(filepath.Join(root, "solo-q"), file))
	assert.NoError(t, CheckDisjoint(filepath.Join(root, "q"), "", in))
}

func TestCheckReplace(t *testing.T) {
	root := t.TempDir()
	plain := filepath.Join(root, "plain")
	write(t, filepath.Join(plain, "notes.txt"), "mine")
	marked := filepath.Join(root, "marked")
	write(t, filepath.Join(marked, MarkerName), string(markerContent(Directory, nil)))
	st := filepath.Join(root, "a.safetensors")
	write(t, st, "\x02\x00\x00\x00\x00\x00\x00\x00{}")
	fake := filepath.Join(root, "b.safetensors")
	write(t, fake, "not a safetensors file at all")
	js := filepath.Join(root, "imp.json")
	write(t, js, `{"x":1}`)
	txt := filepath.Join(root, "notes.txt")
	write(t, txt, "{}")
	require.NoError(t, os.Symlink(marked, filepath.Join(root, "ln")))

	assert.NoError(t, CheckReplace(filepath.Join(root, "new"), Directory, false))
	err := CheckReplace(marked, Directory, false)
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), "--force")

	assert.NoError(t, CheckReplace(marked, Directory, true))
	// Single files need mixq's mark: one written through WriteFile has it.
	for _, c := range []struct {
		p string
		k Kind
	}{{st, Safetensors}, {js, JSON}} {
		err := CheckReplace(c.p, c.k, true)
		require.Error(t, err, "a look-alike the user made")
		assert.Contains(t, err.Error(), "carries no mark")
		if !CanMark(root) {
			t.Logf("%s keeps no user extended attributes: --force never replaces a single file there", root)
			continue
		}
		b, err := os.ReadFile(c.p)
		require.NoError(t, err)
		require.NoError(t, WriteFile(c.p, b))
		assert.NoError(t, CheckReplace(c.p, c.k, true), "the same bytes written by mixq")
	}
	// One kind of directory never replaces another.
	report := filepath.Join(root, "report")
	write(t, filepath.Join(report, MarkerName), string(markerContent(Report, nil)))
	err = CheckReplace(report, Directory, true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is a mixq report directory, not a mixq checkpoint directory")
	// Without --force an unmarked directory is refused for what it is.
	err = CheckReplace(plain, Directory, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "mixq did not write it")
	for _, tc := range []struct {
		p    string
		k    Kind
		why  string
		name string
	}{
		{plain, Directory, "no .mixq-output marker", "unmarked dir"},
		{st, Directory, "not a directory", "file for dir"},
		{marked, Safetensors, "not a regular file", "dir for file"},
		{fake, Safetensors, "does not look like", "wrong content"},
		{txt, JSON, "does not end in .json", "wrong extension"},
		{filepath.Join(root, "ln"), Directory, "symbolic link", "symlink"},
	} {
		err := CheckReplace(tc.p, tc.k, true)
		if assert.Error(t, err, tc.name) {
			assert.ErrorIs(t, err, quant.ErrInput, tc.name)
			assert.Contains(t, err.Error(), tc.why, tc.name)
		}
	}
}

func TestDirCommitNewAndReplace(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "out")
	d, err := NewDir(out)
	require.NoError(t, err)
	write(t, filepath.Join(d.Path(), "a"), "one")
	_, err = os.Stat(out)
	assert.True(t, errors.Is(err, os.ErrNotExist), "nothing at the output before Commit")
	require.NoError(t, d.Commit())
	b, err := os.ReadFile(filepath.Join(out, "a"))
	require.NoError(t, err)
	assert.Equal(t, "one", string(b))
	assert.FileExists(t, filepath.Join(out, MarkerName))

	d, err = NewDir(out)
	require.NoError(t, err)
	write(t, filepath.Join(d.Path(), "x"), "x")
	err = d.Commit()
	require.Error(t, err, "without --force an existing output is left alone")
	assert.ErrorIs(t, err, quant.ErrInput)

	d, err = NewDirFor(out, Directory, true)
	require.NoError(t, err)
	write(t, filepath.Join(d.Path(), "b"), "two")
	require.NoError(t, d.Commit())
	assert.NoFileExists(t, filepath.Join(out, "a"))
	assert.FileExists(t, filepath.Join(out, "b"))
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Len(t, ents, 1, "no temporaries or old copies stay behind")

	d, err = NewDirFor(out, Directory, true)
	require.NoError(t, err)
	d.Abort()
	assert.FileExists(t, filepath.Join(out, "b"), "an aborted run keeps the old output")
	ents, _ = os.ReadDir(root)
	assert.Len(t, ents, 1)
}

func TestCommitRefusesATargetThatChanged(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "out")
	d, err := NewDirFor(out, Directory, true)
	require.NoError(t, err)
	// Someone puts their own directory there while mixq works.
	write(t, filepath.Join(out, "precious"), "keep")
	err = d.Commit()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "marker")
	assert.FileExists(t, filepath.Join(out, "precious"))
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

func TestSweepRemovesOnlyDeadOwnersLeftovers(t *testing.T) {
	root := t.TempDir()
	notes := capture(t)
	dead := strconv.Itoa(deadPID(t))
	live := strconv.Itoa(os.Getpid())

	deadDir := filepath.Join(root, ".out.mixq-tmp-"+dead+"-123")
	write(t, filepath.Join(deadDir, MarkerName), string(tempMarker(Directory)))
	write(t, filepath.Join(deadDir, "model.safetensors"), "partial")
	deadFile := filepath.Join(root, ".x.json.mixq-tmp-"+dead+"-9")
	write(t, deadFile, "{")
	liveDir := filepath.Join(root, ".out.mixq-tmp-"+live+"-5")
	write(t, filepath.Join(liveDir, MarkerName), string(tempMarker(Directory)))
	unmarked := filepath.Join(root, ".mine.mixq-tmp-"+dead+"-7")
	write(t, filepath.Join(unmarked, "data"), "user's")
	user := filepath.Join(root, ".out.tmp-77")
	write(t, filepath.Join(user, "f"), "not ours by name")

	Sweep(root)
	assert.NoDirExists(t, deadDir)
	assert.NoFileExists(t, deadFile)
	assert.DirExists(t, liveDir, "a running owner keeps its temporary")
	assert.DirExists(t, unmarked, "a directory without the marker is never deleted")
	assert.DirExists(t, user)
	joined := strings.Join(*notes, "\n")
	assert.Contains(t, joined, "removed "+deadDir)
	assert.Contains(t, joined, "pid "+dead)
	assert.Contains(t, joined, "left "+unmarked+" in place")
}

func TestSweepRestoresAMovedAsideOutput(t *testing.T) {
	root := t.TempDir()
	notes := capture(t)
	dead := strconv.Itoa(deadPID(t))
	old := filepath.Join(root, ".out.mixq-old-"+dead+"-1")
	write(t, filepath.Join(old, MarkerName), string(tempMarker(Directory)))
	write(t, filepath.Join(old, "w"), "previous")
	Sweep(root)
	b, err := os.ReadFile(filepath.Join(root, "out", "w"))
	require.NoError(t, err)
	assert.Equal(t, "previous", string(b))
	assert.Contains(t, strings.Join(*notes, "\n"), "restored")

	// With a newer output in place, the old copy is just removed.
	write(t, filepath.Join(old, MarkerName), string(tempMarker(Directory)))
	Sweep(root)
	assert.NoDirExists(t, old)
	assert.FileExists(t, filepath.Join(root, "out", "w"))
}

func TestFileCommitAndAbort(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "x.json")
	require.NoError(t, WriteJSON(out, map[string]int{"a": 1}))
	before := sum(t, out)
	f, err := CreateTemp(out)
	require.NoError(t, err)
	assert.Contains(t, filepath.Base(f.Name()), ".x.json.mixq-tmp-"+strconv.Itoa(os.Getpid())+"-")
	AbortFile(f)
	assert.Equal(t, before, sum(t, out))
	ents, _ := os.ReadDir(root)
	assert.Len(t, ents, 1)
	fi, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
}

func TestDirReplaceWithoutExchange(t *testing.T) {
	old := exchange
	exchange = func(a, b string) error { return errors.ErrUnsupported }
	t.Cleanup(func() { exchange = old })
	root := t.TempDir()
	out := filepath.Join(root, "out")
	for _, content := range []string{"one", "two"} {
		d, err := NewDirFor(out, Directory, true)
		require.NoError(t, err)
		write(t, filepath.Join(d.Path(), "f"), content)
		require.NoError(t, d.Commit())
	}
	b, err := os.ReadFile(filepath.Join(out, "f"))
	require.NoError(t, err)
	assert.Equal(t, "two", string(b))
	ents, _ := os.ReadDir(root)
	assert.Len(t, ents, 1)
}

// A leftover whose pid is gone here but whose owner still holds its lock
// (a run in another pid namespace, or on another host) is kept.
func TestSweepKeepsALockedLeftover(t *testing.T) {
	root := t.TempDir()
	capture(t)
	dead := strconv.Itoa(deadPID(t))
	p := filepath.Join(root, ".out.mixq-tmp-"+dead+"-1")
	write(t, filepath.Join(p, MarkerName), string(tempMarker(Directory)))
	l, err := lockPath(p)
	require.NoError(t, err)
	Sweep(root)
	assert.DirExists(t, p, "its owner holds the lock")
	require.NoError(t, l.Close())
	Sweep(root)
	assert.NoDirExists(t, p)
}

func TestAbortRemovesTheParentsItMade(t *testing.T) {
	root := t.TempDir()
	d, err := NewDir(filepath.Join(root, "a", "b", "c", "q"))
	require.NoError(t, err)
	d.Abort()
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, ents)
}

func TestCheckWritable(t *testing.T) {
	root := t.TempDir()
	assert.NoError(t, CheckWritable(filepath.Join(root, "new", "deeper", "q")))
	err := CheckWritable("/proc/self/q")
	require.Error(t, err, "/proc takes no new entries, even from root")
	assert.NotErrorIs(t, err, quant.ErrInput, "the environment's problem")
	write(t, filepath.Join(root, "a.json"), "{}")
	err = CheckWritable(filepath.Join(root, "a.json", "x"))
	assert.ErrorIs(t, err, quant.ErrInput)
	assert.Contains(t, err.Error(), "is a file, not a directory")
}
