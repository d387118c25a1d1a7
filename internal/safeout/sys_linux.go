package safeout

import (
	"errors"

	"golang.org/x/sys/unix"
)

// exchange swaps two paths atomically.
func exchangeSys(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

// alive reports whether process pid may still be running: kill(pid, 0)
// succeeds or is refused for permission. Only ESRCH proves it gone.
func alive(pid int) bool {
	if pid <= 0 {
		return true
	}
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}
