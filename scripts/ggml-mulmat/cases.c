// Writes test-backend-ops --test-file lines: MUL_MAT of an f32 activation
// [cols, n] by a weight [cols, rows] of each quantized type.
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
static void src(enum ggml_type t, long long ne0, long long ne1) {
	size_t row = ggml_row_size(t, ne0);
	printf(" %d %lld %lld 1 1 %zu %zu %zu %zu", t, ne0, ne1, ggml_type_size(t), row, row * ne1, row * ne1);
}
int main(int argc, char **argv) {
	long long rows = atoll(argv[1]), cols = atoll(argv[2]);
	const enum ggml_type types[] = {GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
	for (int t = 0; t < 2; t++) {
		for (int i = 3; i < argc; i++) {
			long long n = atoll(argv[i]);
			printf("%d %d %lld %lld 1 1 0 2", GGML_OP_MUL_MAT, GGML_TYPE_F32, rows, n);
			src(types[t], cols, rows);
			src(GGML_TYPE_F32, cols, n);
			printf(" -\n");
		}
	}
	return 0;
}
