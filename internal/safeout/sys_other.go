//go:build !linux

package safeout

import (
	"errors"
	"os"
	"syscall"
)

func exchangeSys(a, b string) error { return errors.ErrUnsupported }

func renameNoReplace(a, b string) error {
	if _, err := os.Lstat(b); err == nil {
		return os.ErrExist
	}
	return os.Rename(a, b)
}

var (
	syscallENOTDIR   = syscall.ENOTDIR
	syscallENOTEMPTY = syscall.ENOTEMPTY
)

const markAttr = "user.mixq"

// Without extended attributes nothing is marked, so --force never
// replaces a single file there: the safe side.
func setMark(*os.File) {}

// marked is always false where mixq cannot mark files.
func marked(string) bool { return false }

// alive is conservative where mixq cannot ask: leftovers are kept.
func alive(int) bool { return true }

func lockPath(string) (*os.File, error) { return nil, nil }
func lockFile(*os.File) error           { return nil }
func locked(string) bool                { return true }
func writable(string) error             { return nil }

// CanMark is false where mixq cannot mark files.
func CanMark(string) bool { return false }
