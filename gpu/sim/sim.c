// sim.c: a CPU emulator of the CUDA execution model, just large enough for
// the mixq kernels.
//
// A launch runs the blocks of the grid one after another, in a shuffled
// order. Within a block,
// every CUDA thread is a coroutine (ucontext) with its own small stack, all
// on the calling OS thread. A thread runs until it reaches a warp shuffle or
// returns; when all 32 lanes of a warp wait at a shuffle, each gets the
// value of its partner lane and they run on. A shuffle that some lanes of
// the warp never reach (they returned, or wait for a different offset) is a
// bug in the kernel, and the launch fails with a message instead of hanging.
//
// __syncthreads releases the block once every thread has reached it; one
// that returned instead fails the launch. Shared memory is a static array,
// which works because blocks run one at a time. Nothing here is
// thread-safe: the Go side serialises launches.
//
// Switching: each coroutine is started once with makecontext and then lives
// for the whole process, looping over blocks; switches use _setjmp and
// _longjmp, which unlike swapcontext make no system call (swapcontext saves
// the signal mask on every switch, and that dominated the run time).

#undef _FORTIFY_SOURCE  // its longjmp check rejects jumps between stacks
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "sim.h"
#include "simrt.h"

sim_dim3 sim_block_idx, sim_block_dim, sim_grid_dim;
sim_dim3 *sim_thread_idx;

enum { T_RUN, T_SHFL, T_SYNC, T_DONE };

typedef struct {
  jmp_buf jb;
  sim_dim3 idx;
  int state;
  int off;        // the shuffle offset this lane waits with
  uint64_t send;  // the value it offers
  uint64_t recv;  // its partner's value, set at release
} sim_thread;

#define SIM_STACK (64 * 1024)
#define SIM_MAX_THREADS 1024

static sim_thread *threads;
static char *stacks;
static int started;   // coroutines started so far
static int nthreads;  // threads in the current block
static sim_thread *cur;
static jmp_buf sched;
static ucontext_t boot;
static int boot_index;
static sim_kernel cur_kernel;
static const uint64_t *cur_args;
static char errbuf[256];

// Back to the scheduler; returns when the scheduler resumes this thread.
static void yield(sim_thread *me) {
  if (!_setjmp(me->jb)) _longjmp(sched, 1);
}

static void resume(sim_thread *th) {
  if (!_setjmp(sched)) _longjmp(th->jb, 1);
}

static void entry(void) {
  sim_thread *me = &threads[boot_index];
  ucontext_t here;
  if (!_setjmp(me->jb)) swapcontext(&here, &boot);  // parked until the first resume
  for (;;) {
    cur_kernel(cur_args);
    me->state = T_DONE;
    yield(me);
  }
}

// Starts coroutines up to n (once per process: they never end).
static void start(int n) {
  for (; started < n; started++) {
    static ucontext_t uc;
    getcontext(&uc);
    uc.uc_stack.ss_sp = stacks + (size_t)started * SIM_STACK;
    uc.uc_stack.ss_size = SIM_STACK;
    uc.uc_link = NULL;
    makecontext(&uc, entry, 0);
    boot_index = started;
    swapcontext(&boot, &uc);
  }
}

static int fault;  // set by a kernel thread; fails the launch after its block

const void *sim_aligned(const void *p, unsigned long size) {
  if ((uintptr_t)p % size != 0 && !fault) {
    fault = 1;
    snprintf(errbuf, sizeof errbuf, "block (%u,%u,%u) thread %u: misaligned %lu-byte load at %p",
             sim_block_idx.x, sim_block_idx.y, sim_block_idx.z, cur->idx.x, size, p);
  }
  return p;
}

void sim_syncthreads(void) {
  cur->state = T_SYNC;
  yield(cur);
}

uint64_t sim_shfl_xor(uint64_t v, int off) {
  sim_thread *me = cur;
  me->send = v;
  me->off = off;
  me->state = T_SHFL;
  yield(me);
  return me->recv;
}

// Releases the warps whose 32 lanes all wait at a shuffle. Returns -1 on a
// warp where some lanes wait and others cannot arrive.
static int release(int *progress) {
  for (int w = 0; w < nthreads; w += 32) {
    int waiting = 0, done = 0;
    for (int l = 0; l < 32; l++) {
      int s = threads[w + l].state;
      waiting += s == T_SHFL;
      done += s == T_DONE;
    }
    if (waiting == 0) continue;
    if (waiting + done == 32 && done > 0) {
      snprintf(errbuf, sizeof errbuf,
               "block (%u,%u,%u) warp %d: shuffle with %d of 32 lanes, the others returned",
               sim_block_idx.x, sim_block_idx.y, sim_block_idx.z, w / 32, waiting);
      return -1;
    }
    if (waiting < 32) continue;  // some lanes still run
    int off = threads[w].off;
    for (int l = 0; l < 32; l++) {
      if (threads[w + l].off != off) {
        snprintf(errbuf, sizeof errbuf, "warp %d: lanes shuffle with different offsets", w / 32);
        return -1;
      }
    }
    for (int l = 0; l < 32; l++) {
      threads[w + l].recv = threads[w + (l ^ off)].send;
      threads[w + l].state = T_RUN;
    }
    *progress = 1;
  }
  return 0;
}

static int run_block(void) {
  for (int t = 0; t < nthreads; t++) {
    sim_thread *th = &threads[t];
    th->idx.x = (unsigned)t;
    th->idx.y = th->idx.z = 0;
    th->state = T_RUN;
  }
  for (;;) {
    int progress = 0, live = 0;
    for (int t = 0; t < nthreads; t++) {
      sim_thread *th = &threads[t];
      if (th->state != T_RUN) continue;
      cur = th;
      sim_thread_idx = &th->idx;
      resume(th);
      progress = 1;
    }
    int syncing = 0;
    for (int t = 0; t < nthreads; t++) {
      live += threads[t].state != T_DONE;
      syncing += threads[t].state == T_SYNC;
    }
    if (live == 0) return fault ? -1 : 0;
    if (syncing > 0 && syncing == live) {  // every live thread is at the barrier
      if (live < nthreads) {
        snprintf(errbuf, sizeof errbuf, "block (%u,%u,%u): __syncthreads with %d of %d threads, the others returned",
                 sim_block_idx.x, sim_block_idx.y, sim_block_idx.z, syncing, nthreads);
        return -1;
      }
      for (int t = 0; t < nthreads; t++) threads[t].state = T_RUN;
      continue;
    }
    if (release(&progress) != 0) return -1;
    if (!progress) {
      snprintf(errbuf, sizeof errbuf, "block (%u,%u,%u): threads wait at shuffles that never complete",
               sim_block_idx.x, sim_block_idx.y, sim_block_idx.z);
      return -1;
    }
  }
}

const char *sim_launch(sim_kernel k, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       const uint64_t *args) {
  if (bx == 0 || bx % 32 != 0 || bx > SIM_MAX_THREADS) return "block size must be a positive multiple of 32, at most 1024";
  if (gx == 0 || gy == 0 || gz == 0) return "empty grid";
  if (!threads) {
    threads = calloc(SIM_MAX_THREADS, sizeof *threads);
    stacks = malloc((size_t)SIM_MAX_THREADS * SIM_STACK);
    if (!threads || !stacks) return "out of memory for coroutine stacks";
  }
  start((int)bx);
  nthreads = (int)bx;
  fault = 0;
  cur_kernel = k;
  cur_args = args;
  sim_block_dim.x = bx;
  sim_block_dim.y = sim_block_dim.z = 1;
  sim_grid_dim.x = gx;
  sim_grid_dim.y = gy;
  sim_grid_dim.z = gz;
  // Blocks run in a shuffled order, different at every launch: a GPU
  // schedules them in any order, and a kernel whose blocks write each
  // other's outputs must not pass here by luck of a fixed order.
  uint64_t total = (uint64_t)gx * gy * gz;
  uint32_t *order = malloc(total * sizeof *order);
  if (!order) return "out of memory for the block order";
  for (uint64_t i = 0; i < total; i++) order[i] = (uint32_t)i;
  static uint64_t state = 0x9e3779b97f4a7c15ull;
  for (uint64_t i = total; i > 1; i--) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    uint64_t j = state % i;
    uint32_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  const char *err = NULL;
  for (uint64_t i = 0; i < total && !err; i++) {
    uint32_t b = order[i];
    sim_block_idx.x = b % gx;
    sim_block_idx.y = (b / gx) % gy;
    sim_block_idx.z = b / (gx * gy);
    if (run_block() != 0) err = errbuf;
  }
  free(order);
  return err;
}

// ---------------------------------------------------------------------------
// binary16 conversions (RNE, subnormals kept, overflow to Inf).

uint16_t sim_f32_to_f16(uint32_t x) {
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // Inf or NaN
    if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  }
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to Inf
  if (a >= 0x38800000u) {  // a normal binary16
    uint32_t r = a - 0x38000000u;
    uint32_t h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t e = a >> 23;
  if (e < 102) return (uint16_t)sign;  // below 2^-25
  uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e;
  uint32_t h = mant >> shift;
  uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

uint32_t sim_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return sign | 0x7f800000u | (m << 13);
  if (e == 0) {
    if (m == 0) return sign;
    uint32_t ee = 113;
    while (!(m & 0x400u)) {
      m <<= 1;
      ee--;
    }
    return sign | (ee << 23) | ((m & 0x3ffu) << 13);
  }
  return sign | ((e + 112) << 23) | (m << 13);
}
