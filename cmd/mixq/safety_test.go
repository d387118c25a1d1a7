package main

import (
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mixq/mixq/internal/safeout"
)

// treeSums hashes every regular file under root, so that a test can prove a
// command left its inputs exactly as they were.
func treeSums(t *testing.T, root string) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		sums[rel] = sha256.Sum256(b)
		return nil
	}))
	return sums
}

// copyTree copies the small test checkpoints, so that a failing test
// cannot damage the shared data.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dst, 0o755))
	ents, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644))
	}
}

// refused asserts a clean refusal: exit 2, the reason, and no Go panic
// (a panic exits 2 too).
func refused(t *testing.T, code int, stderr string, why string, args []string) {
	t.Helper()
	assert.Equal(t, 2, code, "%v: %s", args, stderr)
	assert.Contains(t, stderr, why, "%v", args)
	assert.NotContains(t, stderr, "panic", "%v", args)
	assert.NotContains(t, stderr, "goroutine ", "%v", args)
}

// Issue 9, defect 1: each of these destroyed an input or an unrelated file
// with exit 0. Now each is refused with exit 2 and every input keeps its
// bytes.
func TestForceNeverTouchesInputs(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	copyTree(t, stories(t), in)
	toks := filepath.Join(in, "reference.json")
	q := filepath.Join(root, "q")
	code, _, stderr := runCLI(t, "quantize", in, "-o", q)
	require.Equal(t, 0, code, stderr)
	// A file input outside any checkpoint directory.
	solo := filepath.Join(root, "solo", "model.safetensors")
	copyTree(t, in, filepath.Dir(solo))
	calibTokens := filepath.Join(root, "calib.json")
	b, err := os.ReadFile(toks)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(calibTokens, b, 0o644))
	before := treeSums(t, root)

	for _, c := range []struct {
		args []string
		why  string
	}{
		{[]string{"quantize", in, "-o", filepath.Join(in, "model.safetensors")}, "lies inside the input"},
		{[]string{"quantize", in, "-o", filepath.Join(in, "config.json")}, "lies inside the input"},
		{[]string{"quantize", in, "-o", in}, "is the input"},
		{[]string{"quantize", in, "-o", root}, "contains the input"},
		{[]string{"quantize", solo, "-o", solo}, "is the input"},
		{[]string{"quantize", solo, "-o", filepath.Join(filepath.Dir(solo), "config.json")}, "is the input"},
		{[]string{"quantize", in, "-o", calibTokens, "--calib-tokens", calibTokens}, "is the input"},
		{[]string{"quantize", in, "-o", filepath.Join(root, "q2"), "--policy", "dynamic", "--report", in}, "is the input"},
		{[]string{"quantize", in, "-o", filepath.Join(root, "q2"), "--policy", "dynamic", "--report", filepath.Join(root, "q2", "r")}, "lies inside"},
		{[]string{"dequantize", q, "-o", filepath.Join(q, "model.safetensors")}, "lies inside the input"},
		{[]string{"dequantize", q, "-o", q}, "is the input"},
		{[]string{"eval", "--model", in, "--tokens", toks, "--logits-out", filepath.Join(in, "model.safetensors")}, "lies inside the input"},
		{[]string{"eval", "--model", in, "--tokens", toks, "--logits-out", toks}, "lies inside the input"},
		{[]string{"eval", "--model", in, "--tokens", calibTokens, "--logits-out", calibTokens}, "is the input"},
		{[]string{"eval", "--model", in, "--quantized", q, "--tokens", toks, "--logits-out", filepath.Join(q, "x.f32")}, "lies inside the input"},
		{[]string{"calibrate", in, "--tokens", toks, "-o", filepath.Join(in, "model.safetensors")}, "lies inside the input"},
		{[]string{"calibrate", solo, "--tokens", calibTokens, "-o", solo}, "is the input"},
		{[]string{"analyze", in, "-o", filepath.Join(in, "reference.json")}, "lies inside the input"},
		{[]string{"analyze", in, "--calib-tokens", calibTokens, "-o", calibTokens}, "is the input"},
	} {
		for _, force := range []bool{false, true} {
			args := c.args
			if force {
				args = append(args[:len(args):len(args)], "--force")
			}
			code, _, stderr := runCLI(t, args...)
			refused(t, code, stderr, c.why, args)
		}
	}
	assert.Equal(t, before, treeSums(t, root), "no input changed")
}

// --force replaces only what mixq wrote: an unrelated directory (a home
// directory, say) and a file of another kind survive it.
func TestForceReplacesOnlyMixqOutputs(t *testing.T) {
	in := stories(t)
	root := t.TempDir()
	home := filepath.Join(root, "home")
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), []byte("key"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(home, "notes.txt"), []byte("mine"), 0o644))
	notes := filepath.Join(home, "notes.txt")
	before := treeSums(t, root)
	toks := filepath.Join(in, "reference.json")
	for _, args := range [][]string{
		{"quantize", in, "-o", home, "--force"},
		{"dequantize", in, "-o", home, "--force"},
		{"synth", "--preset", "tiny", "-o", home, "--force"},
		{"quantize", in, "-o", notes, "--force"},
		{"eval", "--model", in, "--tokens", toks, "--logits-out", notes, "--force"},
		{"calibrate", in, "--tokens", toks, "-o", notes, "--force"},
		{"analyze", in, "-o", notes, "--force"},
	} {
		code, _, stderr := runCLI(t, args...)
		refused(t, code, stderr, "--force replaces only", args)
	}
	assert.Equal(t, before, treeSums(t, root))

	// mixq's own outputs are replaced, and hold the new contents.
	out := filepath.Join(root, "out")
	code, _, stderr := runCLI(t, "synth", "--preset", "tiny", "-o", out)
	require.Equal(t, 0, code, stderr)
	assert.FileExists(t, filepath.Join(out, safeout.MarkerName))
	code, _, stderr = runCLI(t, "synth", "--preset", "tiny-moe", "-o", out, "--force")
	require.Equal(t, 0, code, stderr)
	code, stdout, stderr := runCLI(t, "inspect", out)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "experts")
	logits := filepath.Join(root, "l.f32")
	runs := 2
	if !safeout.CanMark(root) {
		// Without user extended attributes mixq cannot mark the file, so
		// it never replaces it: only the first run can write.
		t.Logf("%s keeps no user extended attributes: not testing --force over a single file", root)
		runs = 1
	}
	for range runs {
		code, _, stderr = runCLI(t, "eval", "--model", in, "--tokens", toks, "--logits-out", logits, "--force")
		require.Equal(t, 0, code, stderr)
	}
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"home", "out", "l.f32"}, names, "no temporaries stay behind")
}

// A read-only output directory is the environment's fault: exit 1.
func TestReadOnlyOutputIsAnEnvironmentError(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o555))
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	if os.Geteuid() == 0 {
		// Permissions do not stop root; /proc refuses new entries to
		// everyone.
		dir = "/proc/self"
	}
	code, _, stderr := runCLI(t, "synth", "--preset", "tiny", "-o", filepath.Join(dir, "s"))
	assert.Equal(t, 1, code, stderr)
	assert.NotContains(t, stderr, "panic")
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// safetyBinary builds mixq once, for tests that signal a real process.
func safetyBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mixq-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mixq")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = &buildError{err, string(out)}
		}
	})
	require.NoError(t, binErr)
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// waitForTemp polls dir until a mixq temporary for name holds a file.
func waitForTemp(t *testing.T, dir, name string, pid int) string {
	t.Helper()
	prefix := "." + name + ".mixq-tmp-" + strconv.Itoa(pid) + "-"
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				inner, _ := os.ReadDir(filepath.Join(dir, e.Name()))
				if len(inner) > 1 { // the marker and at least one shard
					return filepath.Join(dir, e.Name())
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no temporary %s* appeared in %s", prefix, dir)
	return ""
}

// Issue 9, defect 4: after a SIGKILL, which no process can catch, the
// temporary stays; the next run into the same directory removes it and
// says so.
func TestKilledRunsTemporaryIsSweptByTheNextRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and writes a 370 MB checkpoint")
	}
	bin := safetyBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "synth", "--preset", "seed", "-o", filepath.Join(dir, "big"))
	require.NoError(t, cmd.Start())
	tmp := waitForTemp(t, dir, "big", cmd.Process.Pid)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	assert.DirExists(t, tmp, "a killed process leaves its temporary")
	assert.NoDirExists(t, filepath.Join(dir, "big"))

	var stderr bytes.Buffer
	next := exec.Command(bin, "synth", "--preset", "tiny", "-o", filepath.Join(dir, "small"))
	next.Stderr = &stderr
	require.NoError(t, next.Run(), stderr.String())
	assert.Contains(t, stderr.String(), "removed "+tmp)
	assert.Contains(t, stderr.String(), "pid "+strconv.Itoa(cmd.Process.Pid))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, "small", ents[0].Name())
}

// Ctrl-C while writing: exit 130, "interrupted", nothing left behind, and an
// old output replaced with --force is still there, whole.
func TestInterruptWhileWritingKeepsTheOldOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and writes a 370 MB checkpoint")
	}
	bin := safetyBinary(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "s")
	require.NoError(t, exec.Command(bin, "synth", "--preset", "tiny", "-o", out).Run())
	before := treeSums(t, out)

	var stderr bytes.Buffer
	cmd := exec.Command(bin, "synth", "--preset", "seed", "-o", out, "--force")
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	waitForTemp(t, dir, "s", cmd.Process.Pid)
	sent := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	err := cmd.Wait()
	took := time.Since(sent)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, stderr.String())
	assert.Equal(t, 130, ee.ExitCode(), stderr.String())
	assert.Contains(t, stderr.String(), "interrupted")
	assert.NotContains(t, stderr.String(), "context canceled")
	assert.NotContains(t, stderr.String(), "panic")
	t.Logf("stopped %v after SIGINT", took)
	assert.Less(t, took, 5*time.Second, "stops within a second or so (looser for a loaded CI machine)")
	assert.Equal(t, before, treeSums(t, out), "the old output is untouched")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, 1, "no temporaries")
}

// Found by the adversarial review after the first round of fixes.
func TestReviewFindingsOnOutputs(t *testing.T) {
	src := stories(t)
	root := t.TempDir()
	toks := filepath.Join(src, "reference.json")

	// A Hugging Face cache snapshot: the checkpoint's files are symlinks
	// to blobs elsewhere. The blobs are inputs.
	blobs, snap := filepath.Join(root, "blobs"), filepath.Join(root, "snap")
	copyTree(t, src, blobs)
	require.NoError(t, os.MkdirAll(snap, 0o755))
	for _, n := range []string{"model.safetensors", "config.json"} {
		require.NoError(t, os.Symlink(filepath.Join(blobs, n), filepath.Join(snap, n)))
	}
	// Another model, and files that only look like mixq's outputs.
	other := filepath.Join(root, "other")
	copyTree(t, src, other)
	require.NoError(t, os.WriteFile(filepath.Join(root, "pytorch_model.bin"), make([]byte, 4096), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "notes.json"), []byte(`{"mine": true}`), 0o644))
	solo := filepath.Join(root, "solo")
	copyTree(t, src, solo)
	before := treeSums(t, root)

	for _, c := range []struct {
		args []string
		why  string
	}{
		{[]string{"calibrate", snap, "--sample", "1", "--seq-len", "8", "-o", filepath.Join(blobs, "model.safetensors"), "--force"}, "is the input"},
		{[]string{"analyze", snap, "-o", filepath.Join(blobs, "config.json"), "--force"}, "is the input"},
		{[]string{"eval", "--model", snap, "--tokens", toks, "--logits-out", filepath.Join(blobs, "model.safetensors"), "--force"}, "is the input"},
		{[]string{"calibrate", src, "--tokens", toks, "-o", filepath.Join(other, "model.safetensors"), "--force"}, "carries no mark"},
		{[]string{"eval", "--model", src, "--tokens", toks, "--logits-out", filepath.Join(root, "pytorch_model.bin"), "--force"}, "carries no mark"},
		{[]string{"analyze", src, "-o", filepath.Join(root, "notes.json"), "--force"}, "carries no mark"},
		{[]string{"analyze", filepath.Join(solo, "model.safetensors"), "-o", filepath.Join(solo, "reference.json"), "--force"}, "carries no mark"},
		{[]string{"eval", "--model", filepath.Join(solo, "model.safetensors"), "--tokens", toks, "--logits-out", filepath.Join(solo, "reference_logits.f32"), "--force"}, "carries no mark"},
		{[]string{"quantize", src, "-o", filepath.Join(root, "notes.json", "q")}, "is a file, not a directory"},
		{[]string{"quantize", src, "-o", other}, "mixq did not write it"},
	} {
		code, _, stderr := runCLI(t, c.args...)
		refused(t, code, stderr, c.why, c.args)
	}
	assert.Equal(t, before, treeSums(t, root), "nothing was written over")

	// A mixq output that the user has since added files to is theirs too.
	q := filepath.Join(root, "q")
	code, _, stderr := runCLI(t, "quantize", src, "-o", q)
	require.Equal(t, 0, code, stderr)
	require.NoError(t, os.WriteFile(filepath.Join(q, "adapter_model.safetensors"), []byte("lora"), 0o644))
	args := []string{"quantize", src, "-o", q, "--force"}
	code, _, stderr = runCLI(t, args...)
	refused(t, code, stderr, "holds files mixq did not write there (adapter_model.safetensors)", args)
	assert.FileExists(t, filepath.Join(q, "adapter_model.safetensors"))
	require.NoError(t, os.Remove(filepath.Join(q, "adapter_model.safetensors")))

	// A report never replaces a checkpoint, and is checked before the
	// analysis runs (the analysis prints its notices).
	args = []string{"quantize", src, "-o", filepath.Join(root, "q2"), "--policy", "dynamic", "--report", q, "--force"}
	code, _, stderr = runCLI(t, args...)
	refused(t, code, stderr, "is a mixq checkpoint directory, not a mixq report directory", args)
	assert.NotContains(t, stderr, "signal dropped", "refused before the analysis")
	assert.FileExists(t, filepath.Join(q, "model.safetensors"))

	// --report under the static policy does nothing: say so.
	code, _, stderr = runCLI(t, "quantize", src, "-o", filepath.Join(root, "q3"), "--report", filepath.Join(root, "r3"))
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "warning: --report is ignored")

	// A destination that cannot be written is found before the work, and
	// is the environment's fault.
	code, _, stderr = runCLI(t, "calibrate", src, "--tokens", toks, "-o", "/proc/self/c.safetensors")
	assert.Equal(t, 1, code, stderr)
	assert.Contains(t, stderr, "cannot write")
}

// SIGHUP (a closed terminal) stops a run with its cleanup, and a reader
// that goes away does not kill mixq halfway through writing.
func TestHangupAndBrokenPipe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and writes a 370 MB checkpoint")
	}
	bin := safetyBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "synth", "--preset", "seed", "-o", filepath.Join(dir, "s"))
	require.NoError(t, cmd.Start())
	waitForTemp(t, dir, "s", cmd.Process.Pid)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 129, ee.ExitCode())
	ents, _ := os.ReadDir(dir)
	assert.Empty(t, ents, "no temporaries after SIGHUP")

	in := stories(t)
	q := exec.Command(bin, "quantize", in, "-o", filepath.Join(dir, "q"))
	r, w, err := os.Pipe()
	require.NoError(t, err)
	q.Stdout, q.Stderr = w, w
	require.NoError(t, r.Close()) // nobody will ever read
	err = q.Run()
	w.Close()
	require.NoError(t, err, "a closed stdout/stderr is no reason to abandon the output")
	assert.FileExists(t, filepath.Join(dir, "q", "model.safetensors"))
}
