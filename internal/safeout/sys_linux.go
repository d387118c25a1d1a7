package safeout

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// exchangeSys swaps two paths atomically.
func exchangeSys(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

// renameNoReplace renames a to b unless b exists (fs.ErrExist then), in one
// step, so that two runs into one new path cannot both believe they won.
func renameNoReplace(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without renameat2 flags: check, then rename.
		if _, lerr := os.Lstat(b); lerr == nil {
			return unix.EEXIST
		}
		return os.Rename(a, b)
	}
	return err
}

var (
	syscallENOTDIR   = unix.ENOTDIR
	syscallENOTEMPTY = unix.ENOTEMPTY
)

// markAttr is the extended attribute on every file mixq writes.
const markAttr = "user.mixq"

func setMark(f *os.File) { _ = unix.Fsetxattr(int(f.Fd()), markAttr, []byte("1"), 0) }

// marked reports whether the file at path carries mixq's mark.
func marked(path string) bool {
	var buf [8]byte
	n, err := unix.Lgetxattr(path, markAttr, buf[:])
	return err == nil && n > 0
}

// alive reports whether process pid may still be running: kill(pid, 0)
// succeeds or is refused for permission. Only ESRCH proves it gone.
func alive(pid int) bool {
	if pid <= 0 {
		return true
	}
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// lockPath opens path (a directory) and takes an exclusive lock on it.
func lockPath(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockFile takes an exclusive flock on f, without waiting.
func lockFile(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil // a file system without locks: the pid check alone
	}
	return err
}

// locked reports whether some process holds a lock on path. It opens
// without blocking, so a FIFO named like a leftover cannot hang it.
func locked(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return true // cannot tell: keep it
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(fd, unix.LOCK_UN)
	return false
}

// writable asks the kernel whether dir accepts new entries (EROFS for a
// read-only mount, EACCES for permissions).
func writable(dir string) error { return unix.Access(dir, unix.W_OK|unix.X_OK) }

// CanMark reports whether the file system holding dir keeps mixq's mark on
// files, that is whether --force can ever replace a single file there. It
// writes and removes a probe file.
func CanMark(dir string) bool {
	f, err := os.CreateTemp(dir, ".mixq-mark-probe-*")
	if err != nil {
		return false
	}
	defer os.Remove(f.Name())
	defer f.Close()
	setMark(f)
	return marked(f.Name())
}
