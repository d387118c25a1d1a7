package gpu

import "fmt"

// Ptr is a device address.
type Ptr uint64

// Stream names one of the device's two in-order work queues.
type Stream int

// Streams is the number of streams a Device provides.
const Streams = 2

// Dim3 is a grid size in blocks.
type Dim3 struct{ X, Y, Z int }

// Device is what the backend needs from a GPU. Operations on one stream run
// in order; operations on different streams may overlap. Host memory passed
// to Upload and Download must stay untouched until Sync of that stream
// returns. A Device is used by one goroutine at a time.
type Device interface {
	// Name identifies the device, e.g. "cuda:0" or "cuda-sim".
	Name() string
	Alloc(bytes int) (Ptr, error)
	Free(p Ptr) error
	Upload(dst Ptr, src []byte, s Stream) error
	Download(dst []byte, src Ptr, s Stream) error
	// Fill sets n bytes at dst to b.
	Fill(dst Ptr, b byte, n int, s Stream) error
	// Launch runs kernel name on grid blocks of block threads (a multiple
	// of 32), passing every argument as a 64-bit word.
	Launch(name string, grid Dim3, block int, s Stream, args ...uint64) error
	Sync(s Stream) error
	Close() error
}

// Info describes a GPU for mixq devices.
type Info struct {
	Ordinal          int    `json:"ordinal"`
	Name             string `json:"name"`
	Major            int    `json:"compute_major"`
	Minor            int    `json:"compute_minor"`
	TotalMemory      int64  `json:"total_memory_bytes"`
	MultiProcessors  int    `json:"multiprocessors"`
	DriverVersion    int    `json:"driver_version"`
	PTXArchitecture  string `json:"ptx_arch,omitempty"`
	UnsupportedCause string `json:"unsupported,omitempty"`
}

// DriverString formats a CUDA driver version (1000·major + 10·minor).
func DriverString(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }
