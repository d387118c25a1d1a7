//go:build !linux

package safeout

import "errors"

func exchangeSys(a, b string) error { return errors.ErrUnsupported }

// alive is conservative where mixq cannot ask: leftovers are kept.
func alive(pid int) bool { return true }
