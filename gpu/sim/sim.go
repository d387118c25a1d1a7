package sim

/*
#cgo CFLAGS: -O2 -std=gnu11 -Wall -Wno-unused-function
#cgo LDFLAGS: -lm
#include <stdlib.h>
#include <string.h>
#include "simrt.h"

static void sim_copy(uint64_t dst, uint64_t src, size_t n) { memcpy((void *)dst, (const void *)src, n); }
static void sim_fill(uint64_t dst, int b, size_t n) { memset((void *)dst, b, n); }
static uint64_t sim_alloc(size_t n) { return (uint64_t)(uintptr_t)malloc(n); }
// The first byte of [p, p+n) that is not b, or n.
static size_t sim_check(uint64_t p, int b, size_t n) {
	const unsigned char *q = (const unsigned char *)(uintptr_t)p;
	for (size_t i = 0; i < n; i++)
		if (q[i] != (unsigned char)b) return i;
	return n;
}
static void sim_free(uint64_t p) { free((void *)(uintptr_t)p); }
static uint64_t sim_addr(void *p) { return (uint64_t)(uintptr_t)p; }
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/mixq/mixq/gpu"
)

// The emulator keeps global state (the coroutines of the running block), so
// launches from all devices are serialised.
var launchMu sync.Mutex

// guard is the size of the canary zones on both sides of every
// allocation, checked after every launch: a kernel that writes outside its
// buffers fails the launch instead of corrupting memory silently.
const (
	guard      = 256
	guardByte  = 0xa5
	guardBytes = C.size_t(guard)
)

// Device is a gpu.Device whose memory is C heap memory and whose kernels run
// in the emulator. Streams execute each operation as it is issued.
type Device struct {
	mu      sync.Mutex
	allocs  map[gpu.Ptr]int // user pointer -> size, guards excluded
	kernels map[string]C.sim_kernel
	closed  bool
}

var _ gpu.Device = (*Device)(nil)

// NewDevice returns an emulated device.
func NewDevice() *Device {
	return &Device{allocs: map[gpu.Ptr]int{}, kernels: map[string]C.sim_kernel{}}
}

// New returns the emulated device behind the GPU backend driver, with
// buffers sized exactly (no growth headroom), so that the guards sit right
// after the bytes a call may touch.
func New(o gpu.Options) *gpu.Backend {
	o.ExactBuffers = true
	return gpu.New(NewDevice(), o)
}

// Name is "cuda-sim".
func (d *Device) Name() string { return "cuda-sim" }

// Alloc returns n bytes of C heap memory.
func (d *Device) Alloc(n int) (gpu.Ptr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	base := C.sim_alloc(C.size_t(n) + 2*guardBytes)
	if base == 0 {
		return 0, fmt.Errorf("cuda-sim: out of memory allocating %d bytes", n)
	}
	C.sim_fill(base, guardByte, guardBytes)
	C.sim_fill(base+C.uint64_t(guard+n), guardByte, guardBytes)
	p := gpu.Ptr(base) + guard
	d.allocs[p] = n
	return p, nil
}

// Free releases an allocation.
func (d *Device) Free(p gpu.Ptr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.allocs[p]; !ok {
		return fmt.Errorf("cuda-sim: free of unknown pointer %#x", uint64(p))
	}
	delete(d.allocs, p)
	C.sim_free(C.uint64_t(p - guard))
	return nil
}

// checkGuards reports the first allocation whose canaries a kernel changed.
func (d *Device) checkGuards(kernel string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p, n := range d.allocs {
		if i := C.sim_check(C.uint64_t(p-guard), guardByte, guardBytes); i != guardBytes {
			return fmt.Errorf("cuda-sim: %s wrote %d bytes before a %d-byte buffer", kernel, guard-int(i), n)
		}
		if i := C.sim_check(C.uint64_t(p)+C.uint64_t(n), guardByte, guardBytes); i != guardBytes {
			return fmt.Errorf("cuda-sim: %s wrote past the end of a %d-byte buffer (byte %d)", kernel, n, n+int(i))
		}
	}
	return nil
}

// within checks that [p, p+n) lies in one allocation, as a GPU's memory
// checker would: the emulator must not turn an indexing bug into silent
// heap corruption.
func (d *Device) within(p gpu.Ptr, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for base, size := range d.allocs {
		if p >= base && uint64(p)+uint64(n) <= uint64(base)+uint64(size) {
			return nil
		}
	}
	return fmt.Errorf("cuda-sim: %d bytes at %#x are outside every allocation", n, uint64(p))
}

// Upload copies host bytes to the device.
func (d *Device) Upload(dst gpu.Ptr, src []byte, _ gpu.Stream) error {
	if len(src) == 0 {
		return nil
	}
	if err := d.within(dst, len(src)); err != nil {
		return err
	}
	C.sim_copy(C.uint64_t(dst), C.sim_addr(unsafe.Pointer(&src[0])), C.size_t(len(src)))
	return nil
}

// Download copies device bytes to the host.
func (d *Device) Download(dst []byte, src gpu.Ptr, _ gpu.Stream) error {
	if len(dst) == 0 {
		return nil
	}
	if err := d.within(src, len(dst)); err != nil {
		return err
	}
	C.sim_copy(C.sim_addr(unsafe.Pointer(&dst[0])), C.uint64_t(src), C.size_t(len(dst)))
	return nil
}

// Fill sets n bytes to b.
func (d *Device) Fill(dst gpu.Ptr, b byte, n int, _ gpu.Stream) error {
	if err := d.within(dst, n); err != nil {
		return err
	}
	C.sim_fill(C.uint64_t(dst), C.int(b), C.size_t(n))
	return nil
}

// Launch runs a kernel in the emulator.
func (d *Device) Launch(name string, grid gpu.Dim3, block int, _ gpu.Stream, args ...uint64) error {
	d.mu.Lock()
	k, ok := d.kernels[name]
	if !ok {
		cs := C.CString(name)
		k = C.sim_lookup(cs)
		C.free(unsafe.Pointer(cs))
		if k == nil {
			d.mu.Unlock()
			return fmt.Errorf("cuda-sim: unknown kernel %q", name)
		}
		d.kernels[name] = k
	}
	d.mu.Unlock()
	if grid.X < 1 || grid.Y < 1 || grid.Z < 1 || grid.Y > 65535 || grid.Z > 65535 || grid.X > 1<<31-1 {
		return fmt.Errorf("cuda-sim: %s: invalid grid %+v", name, grid)
	}
	words := C.malloc(C.size_t(8 * max(len(args), 1)))
	defer C.free(words)
	copy(unsafe.Slice((*uint64)(words), len(args)), args)
	launchMu.Lock()
	msg := C.sim_launch(k, C.uint(grid.X), C.uint(grid.Y), C.uint(grid.Z), C.uint(block), (*C.uint64_t)(words))
	launchMu.Unlock()
	if msg != nil {
		return fmt.Errorf("cuda-sim: %s: %s", name, C.GoString(msg))
	}
	return d.checkGuards(name)
}

// Sync returns at once: every operation completed when it was issued.
func (d *Device) Sync(gpu.Stream) error { return nil }

// Close frees what is still allocated.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p := range d.allocs {
		C.sim_free(C.uint64_t(p - guard))
		delete(d.allocs, p)
	}
	d.closed = true
	return nil
}
