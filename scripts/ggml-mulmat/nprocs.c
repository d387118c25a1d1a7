// LD_PRELOAD shim for ggml's test-backend-ops: it runs the CPU backend on
// hardware_concurrency()/2 threads, which libstdc++ takes from get_nprocs().
// Answering 2*MIXQ_THREADS makes it use MIXQ_THREADS threads, the number
// mixq bench uses (GOMAXPROCS), without changing llama.cpp's source.
#include <stdlib.h>

int get_nprocs(void) {
	const char *s = getenv("MIXQ_THREADS");
	int n = s ? atoi(s) : 0;
	return n > 0 ? 2 * n : 2;
}

int get_nprocs_conf(void) { return get_nprocs(); }
