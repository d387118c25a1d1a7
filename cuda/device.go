//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/kernels"
)

// Device is an NVIDIA GPU as a gpu.Device.
type Device struct {
	ordinal int
	dev     cu.Device
	ctx     *cu.Ctx
	arch    string
	streams [gpu.Streams]cu.Stream
	mods    map[string]cu.Module
	fns     map[string]cu.Function
	sync    bool
}

var _ gpu.Device = (*Device)(nil)

// Open creates a context on device ordinal and its streams. Modules are
// loaded on first use.
func Open(ordinal int) (*Device, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cuda: no device %d (%d present)", ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", ordinal, err)
	}
	major, minor, err := dev.ComputeCapability()
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: compute capability: %w", ordinal, err)
	}
	arch, err := kernels.Arch(major, minor)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", ordinal, err)
	}
	cuctx, err := newContext(dev)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: creating a context: %w", ordinal, err)
	}
	ctx := cu.CtxFromCUContext(dev, cuctx, cu.SchedAuto)
	started := make(chan error)
	go ctx.Run(started) // locks its goroutine to an OS thread and makes the context current there
	if err := <-started; err != nil {
		ctx.Close()
		return nil, fmt.Errorf("cuda: device %d: binding the context: %w", ordinal, err)
	}
	d := &Device{
		ordinal: ordinal, dev: dev, ctx: ctx, arch: arch,
		mods: map[string]cu.Module{}, fns: map[string]cu.Function{},
		sync: os.Getenv("MIXQ_CUDA_SYNC") == "1",
	}
	for i := range d.streams {
		s, err := ctx.MakeStream(cu.NonBlocking)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("cuda: device %d: creating stream %d: %w", ordinal, i, err)
		}
		d.streams[i] = s
	}
	return d, nil
}

// newContext creates a context without leaving it current on the calling
// thread: cuCtxCreate pushes it there, and that thread goes back to the Go
// scheduler afterwards. All work runs on the context's own locked thread.
func newContext(dev cu.Device) (cu.CUContext, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c, err := dev.MakeContext(cu.SchedAuto)
	if err != nil {
		return c, err
	}
	if _, err := cu.PopCurrentCtx(); err != nil {
		c.Destroy()
		return c, fmt.Errorf("popping the new context: %w", err)
	}
	return c, nil
}

// Name is "cuda:N".
func (d *Device) Name() string { return fmt.Sprintf("cuda:%d", d.ordinal) }

// Arch is the PTX target in use (compute_80 or compute_90).
func (d *Device) Arch() string { return d.arch }

// Context is the cu context, for benchmarks that add their own work (cuBLAS).
func (d *Device) Context() *cu.Ctx { return d.ctx }

// Stream returns the cu stream behind s.
func (d *Device) Stream(s gpu.Stream) cu.Stream { return d.streams[s] }

// after turns the error a void cu call left in the context into a Go error.
func (d *Device) after(what string) error {
	if err := d.ctx.Error(); err != nil {
		return fmt.Errorf("%s: %s: %w", d.Name(), what, err)
	}
	return nil
}

// Alloc allocates device memory.
func (d *Device) Alloc(n int) (gpu.Ptr, error) {
	p, err := d.ctx.MemAlloc(int64(n))
	if err != nil {
		return 0, fmt.Errorf("%s: cuMemAlloc(%d): %w", d.Name(), n, err)
	}
	return gpu.Ptr(p), nil
}

// Free releases device memory.
func (d *Device) Free(p gpu.Ptr) error {
	d.ctx.MemFree(cu.DevicePtr(p))
	return d.after("cuMemFree")
}

// Upload copies host memory to the device on stream s. From pageable
// memory the driver stages the bytes before returning, so src may be
// reused as soon as Upload returns; the contract (untouched until Sync) is
// kept anyway, for pinned memory.
func (d *Device) Upload(dst gpu.Ptr, src []byte, s gpu.Stream) error {
	if len(src) == 0 {
		return nil
	}
	d.ctx.MemcpyHtoDAsync(cu.DevicePtr(dst), unsafe.Pointer(&src[0]), int64(len(src)), d.streams[s])
	runtime.KeepAlive(src)
	return d.after("cuMemcpyHtoDAsync")
}

// Download copies device memory to the host on stream s.
func (d *Device) Download(dst []byte, src gpu.Ptr, s gpu.Stream) error {
	if len(dst) == 0 {
		return nil
	}
	d.ctx.MemcpyDtoHAsync(unsafe.Pointer(&dst[0]), cu.DevicePtr(src), int64(len(dst)), d.streams[s])
	runtime.KeepAlive(dst)
	return d.after("cuMemcpyDtoHAsync")
}

// Fill sets n bytes at dst to b.
func (d *Device) Fill(dst gpu.Ptr, b byte, n int, s gpu.Stream) error {
	d.ctx.MemsetD8Async(cu.DevicePtr(dst), b, int64(n), d.streams[s])
	return d.after("cuMemsetD8Async")
}

// function returns a kernel, loading its family's module on first use.
func (d *Device) function(name string) (cu.Function, error) {
	if fn, ok := d.fns[name]; ok {
		return fn, nil
	}
	fam, err := kernels.Family(name)
	if err != nil {
		return cu.Function{}, err
	}
	mod, ok := d.mods[fam]
	if !ok {
		ptx, err := kernels.PTX(d.arch, fam)
		if err != nil {
			return cu.Function{}, err
		}
		log := &cu.JITErrorLogBuffer{Buffer: make([]byte, 16<<10)}
		err = d.ctx.Do(func() error {
			var err error
			mod, err = cu.LoadDataEx(ptx, log)
			return err
		})
		if err != nil {
			return cu.Function{}, fmt.Errorf("%s: loading the %s PTX (%s): %w\n%s", d.Name(), fam, d.arch, err, cString(log.Buffer))
		}
		d.mods[fam] = mod
	}
	fn, err := d.ctx.ModuleFunction(mod, name)
	if err != nil {
		return cu.Function{}, fmt.Errorf("%s: kernel %s: %w", d.Name(), name, err)
	}
	d.fns[name] = fn
	return fn, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Launch runs a kernel. cu reads every parameter as 8 bytes, so each
// argument lives in its own uint64 and the kernels declare 64-bit
// parameters only.
func (d *Device) Launch(name string, grid gpu.Dim3, block int, s gpu.Stream, args ...uint64) error {
	fn, err := d.function(name)
	if err != nil {
		return err
	}
	words := make([]uint64, len(args))
	copy(words, args)
	params := make([]unsafe.Pointer, len(words))
	for i := range words {
		params[i] = unsafe.Pointer(&words[i])
	}
	d.ctx.LaunchKernel(fn, grid.X, grid.Y, grid.Z, block, 1, 1, 0, d.streams[s], params)
	runtime.KeepAlive(words)
	if err := d.after("launching " + name); err != nil {
		return err
	}
	if d.sync {
		d.ctx.SynchronizeStream(d.streams[s])
		return d.after(name + " (MIXQ_CUDA_SYNC)")
	}
	return nil
}

// Sync waits for the work queued on stream s.
func (d *Device) Sync(s gpu.Stream) error {
	d.ctx.SynchronizeStream(d.streams[s])
	return d.after("cuStreamSynchronize")
}

// Close releases the streams, modules and context.
func (d *Device) Close() error {
	if d.ctx == nil {
		return nil
	}
	var errs []error
	for i := range d.streams {
		if d.streams[i] != (cu.Stream{}) {
			d.ctx.DestroyStream(&d.streams[i])
			errs = append(errs, d.after("cuStreamDestroy"))
		}
	}
	for _, m := range d.mods {
		d.ctx.Unload(m)
		errs = append(errs, d.after("cuModuleUnload"))
	}
	errs = append(errs, d.ctx.Close())
	d.ctx = nil
	return errors.Join(errs...)
}
