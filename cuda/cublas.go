//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int (*cublas_create_t)(void **);
typedef int (*cublas_destroy_t)(void *);
typedef int (*cublas_sgemv_t)(void *, int, int, int, const float *, const float *, int,
                              const float *, int, const float *, float *, int);

typedef struct {
	void *lib, *handle;
	cublas_create_t create;
	cublas_destroy_t destroy;
	cublas_sgemv_t sgemv;
} cublas;

// dlerror's text is per thread: copy it on the thread that called dlopen
// (the context's thread, inside ctx.Do).
static char open_error[512];

static int cublas_open(cublas *c, const char *path) {
	open_error[0] = 0;
	c->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!c->lib) {
		const char *e = dlerror();
		snprintf(open_error, sizeof open_error, "%s", e ? e : path);
		return -1;
	}
	c->create = (cublas_create_t)dlsym(c->lib, "cublasCreate_v2");
	c->destroy = (cublas_destroy_t)dlsym(c->lib, "cublasDestroy_v2");
	c->sgemv = (cublas_sgemv_t)dlsym(c->lib, "cublasSgemv_v2");
	int r = -2;
	if (c->create && c->destroy && c->sgemv) r = c->create(&c->handle);
	if (r != 0) {
		dlclose(c->lib);
		c->lib = NULL;
	}
	return r;
}

// y[N] = W[N][K]·x[K] for row-major W: cuBLAS is column-major, so W is the
// K×N matrix A with lda = K and y = Aᵀx (CUBLAS_OP_T = 1).
static int cublas_sgemv_rowmajor(cublas *c, uint64_t w, uint64_t x, uint64_t y, int n, int k) {
	float one = 1.0f, zero = 0.0f;
	return c->sgemv(c->handle, 1, k, n, &one, (const float *)w, k, (const float *)x, 1, &zero,
	                (float *)y, 1);
}

static void cublas_close(cublas *c) {
	c->destroy(c->handle);
	dlclose(c->lib);
}
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/mixq/mixq/gpu"
)

// The FP32 baseline calls cuBLAS through dlopen rather than through
// gorgonia.org/cu/blas: that package links the libcublas of the build
// toolkit (libcublas.so.11 from CUDA 11.8) into the plugin, and the plugin
// would then fail to load on GPU machines that carry only a newer cuBLAS.
// Sonames are tried newest first; MIXQ_CUBLAS names a library file.
var cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}

type sgemv struct {
	d *Device
	c *C.cublas
}

func openSGEMV(d *Device) (*sgemv, error) {
	names := cublasNames
	if p := os.Getenv("MIXQ_CUBLAS"); p != "" {
		names = []string{p}
	}
	var why []string
	for _, n := range names {
		c := (*C.cublas)(C.calloc(1, C.size_t(unsafe.Sizeof(C.cublas{}))))
		cs := C.CString(n)
		var r C.int
		// cublasCreate binds to the current context: run it on the context's thread.
		err := d.ctx.Do(func() error { r = C.cublas_open(c, cs); return nil })
		C.free(unsafe.Pointer(cs))
		if err == nil && r == 0 {
			return &sgemv{d: d, c: c}, nil
		}
		switch r {
		case -1:
			why = append(why, C.GoString(&C.open_error[0]))
		case -2:
			why = append(why, n+": missing cublasSgemv_v2")
		default:
			why = append(why, fmt.Sprintf("%s: cublasCreate returned %d", n, int(r)))
		}
		C.free(unsafe.Pointer(c))
	}
	return nil, fmt.Errorf("cuBLAS not available: %s (set MIXQ_CUBLAS)", strings.Join(why, "; "))
}

// run queues y = W·x on the legacy default stream.
func (s *sgemv) run(w, x, y gpu.Ptr, n, k int) error {
	var r C.int
	if err := s.d.ctx.Do(func() error {
		r = C.cublas_sgemv_rowmajor(s.c, C.uint64_t(w), C.uint64_t(x), C.uint64_t(y), C.int(n), C.int(k))
		return nil
	}); err != nil {
		return err
	}
	if r != 0 {
		return fmt.Errorf("cublasSgemv_v2 returned status %d", int(r))
	}
	return nil
}

func (s *sgemv) close() {
	_ = s.d.ctx.Do(func() error { C.cublas_close(s.c); return nil })
	C.free(unsafe.Pointer(s.c))
}
