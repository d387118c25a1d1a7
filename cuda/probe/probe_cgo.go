//go:build cgo && linux

package probe

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*fn_i)(unsigned);
typedef int (*fn_pi)(int *);
typedef int (*fn_dev)(int *, int);
typedef int (*fn_name)(char *, int, int);
typedef int (*fn_mem)(size_t *, int);
typedef int (*fn_attr)(int *, int, int);
typedef int (*fn_err)(int, const char **);

typedef struct {
	void *lib;
	fn_i init;
	fn_pi driver_version, device_count;
	fn_dev device_get;
	fn_name device_name;
	fn_mem total_mem;
	fn_attr attribute;
	fn_err error_name;
} driver;

// Opens the driver and resolves the entry points; returns dlerror() text
// or NULL. The symbols are the stable ABI names (the _v2 memory query is
// what cuda.h maps cuDeviceTotalMem to).
static char open_error[512];  // dlerror's text is per thread: copy it here

static const char *open_driver(driver *d) {
	memset(d, 0, sizeof *d);
	d->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!d->lib) {
		const char *e = dlerror();
		snprintf(open_error, sizeof open_error, "%s", e ? e : "libcuda.so.1: dlopen failed");
		return open_error;
	}
	d->init = (fn_i)dlsym(d->lib, "cuInit");
	d->driver_version = (fn_pi)dlsym(d->lib, "cuDriverGetVersion");
	d->device_count = (fn_pi)dlsym(d->lib, "cuDeviceGetCount");
	d->device_get = (fn_dev)dlsym(d->lib, "cuDeviceGet");
	d->device_name = (fn_name)dlsym(d->lib, "cuDeviceGetName");
	d->total_mem = (fn_mem)dlsym(d->lib, "cuDeviceTotalMem_v2");
	d->attribute = (fn_attr)dlsym(d->lib, "cuDeviceGetAttribute");
	d->error_name = (fn_err)dlsym(d->lib, "cuGetErrorName");
	if (!d->init || !d->driver_version || !d->device_count || !d->device_get || !d->device_name ||
	    !d->total_mem || !d->attribute)
		return "libcuda.so.1 lacks a driver API entry point";
	return NULL;
}

static int d_init(driver *d) { return d->init(0); }
static int d_version(driver *d, int *v) { return d->driver_version(v); }
static int d_count(driver *d, int *n) { return d->device_count(n); }
static int d_get(driver *d, int *dev, int i) { return d->device_get(dev, i); }
static int d_name(driver *d, char *buf, int n, int dev) { return d->device_name(buf, n, dev); }
static int d_mem(driver *d, size_t *b, int dev) { return d->total_mem(b, dev); }
static int d_attr(driver *d, int *v, int a, int dev) { return d->attribute(v, a, dev); }
static const char *d_errname(driver *d, int r) {
	const char *s = NULL;
	if (d->error_name == NULL || d->error_name(r, &s) != 0) return NULL;
	return s;
}
*/
import "C"

import (
	"fmt"
	"sync"

	"github.com/mixq/mixq/gpu"
	"github.com/mixq/mixq/kernels"
)

// Device attributes (CUdevice_attribute).
const (
	attrMultiProcessors = 16
	attrMajor           = 75
	attrMinor           = 76
)

var (
	once   sync.Once
	result Result
)

// Run probes the driver once per process and returns what it found.
func Run() Result {
	once.Do(func() { result = probe() })
	return result
}

func probe() Result {
	var d C.driver
	if msg := C.open_driver(&d); msg != nil {
		return Result{Err: fmt.Errorf("no CUDA driver: %s", C.GoString(msg))}
	}
	// The library stays open: the plugin's libcuda reference reuses it.
	fail := func(call string, r C.int) Result {
		name := C.d_errname(&d, r)
		s := fmt.Sprintf("error %d", int(r))
		if name != nil {
			s = fmt.Sprintf("%s (%d)", C.GoString(name), int(r))
		}
		return Result{Driver: true, Err: fmt.Errorf("CUDA driver: %s failed: %s", call, s)}
	}
	// The version needs no cuInit, so it is known even when init fails.
	var v C.int
	if r := C.d_version(&d, &v); r != 0 {
		return fail("cuDriverGetVersion", r)
	}
	if r := C.d_init(&d); r != 0 {
		res := fail("cuInit", r)
		res.DriverVersion = int(v)
		return res
	}
	res := Result{Driver: true, DriverVersion: int(v)}
	var n C.int
	if r := C.d_count(&d, &n); r != 0 {
		return fail("cuDeviceGetCount", r)
	}
	for i := range int(n) {
		var dev C.int
		if r := C.d_get(&d, &dev, C.int(i)); r != 0 {
			return fail("cuDeviceGet", r)
		}
		var name [256]C.char
		if r := C.d_name(&d, &name[0], C.int(len(name)), dev); r != 0 {
			return fail("cuDeviceGetName", r)
		}
		var mem C.size_t
		if r := C.d_mem(&d, &mem, dev); r != 0 {
			return fail("cuDeviceTotalMem", r)
		}
		attr := func(a int) (int, error) {
			var x C.int
			if r := C.d_attr(&d, &x, C.int(a), dev); r != 0 {
				return 0, fail("cuDeviceGetAttribute", r).Err
			}
			return int(x), nil
		}
		info := gpu.Info{Ordinal: i, Name: C.GoString(&name[0]), TotalMemory: int64(mem), DriverVersion: int(v)}
		var err error
		if info.Major, err = attr(attrMajor); err != nil {
			return Result{Driver: true, Err: err}
		}
		if info.Minor, err = attr(attrMinor); err != nil {
			return Result{Driver: true, Err: err}
		}
		if info.MultiProcessors, err = attr(attrMultiProcessors); err != nil {
			return Result{Driver: true, Err: err}
		}
		if arch, err := kernels.Arch(info.Major, info.Minor); err != nil {
			info.UnsupportedCause = err.Error()
		} else {
			info.PTXArchitecture = arch
		}
		res.Devices = append(res.Devices, info)
	}
	if len(res.Devices) == 0 {
		res.Err = fmt.Errorf("CUDA driver %s found, but no CUDA device", gpu.DriverString(res.DriverVersion))
	}
	return res
}
