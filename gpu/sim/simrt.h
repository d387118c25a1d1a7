// simrt.h: the emulator's launch entry point, for the Go side.
#ifndef MIXQ_SIMRT_H
#define MIXQ_SIMRT_H
#include <stdint.h>

// A kernel entry that reads its arguments as 64-bit words, as cuLaunchKernel
// does with the words the Go launcher gives it.
typedef void (*sim_kernel)(const uint64_t *args);

// Runs k over a grid of gx·gy·gz blocks of bx threads. Returns NULL, or a
// message describing why the launch failed.
const char *sim_launch(sim_kernel k, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       const uint64_t *args);

// The kernel table (table.h): the entry of a kernel by name, or NULL.
sim_kernel sim_lookup(const char *name);
#endif
