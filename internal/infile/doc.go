// Package infile opens mixq's input files safely.
//
// Every file mixq reads (weights, configuration, token lists, rules,
// calibration data, tokenizers) goes through Open or ReadFile, which refuse
// anything but a regular file (symlinks followed). A named pipe would block
// the open, and with it Ctrl-C, forever; a device such as /dev/zero never
// ends. The open itself uses O_NONBLOCK, so even a file swapped for a FIFO
// between a check and the open cannot hang it, and the kind is decided by
// fstat on the opened descriptor.
package infile
