// Package gtensor adapts mixq's float32 buffers to gorgonia.org/tensor
// without copying, for library users who work with tensor.Dense.
//
// It lives in its own package so that the mixq command, which never needs
// gorgonia, does not link it.
//
// gorgonia.org/tensor v0.9.24 panics at start on Go 1.26 unless
// go4.org/unsafe/assume-no-moving-gc is at v0.0.0-20231121144256-b99613f794b6
// or later; go.mod pins that version.
package gtensor
