#!/usr/bin/env bash
# Side-by-side CPU matmul benchmark: ggml's own MUL_MAT (test-backend-ops
# perf) and `mixq bench`, on the same machine, the same shapes (a
# ROWSxCOLS weight times an f32 activation of BATCH rows), the same number
# of threads, in alternating rounds so that both see the same load. Prints
# the table recorded in bench/README.md. Not run in CI.
#
#   scripts/ggml-mulmat/run.sh                    # 4096x4096, batch 1 and 16, 2 threads, 3 rounds
#   SHAPE=4096x14336 BATCHES="1 8" ROUNDS=5 THREADS=2 scripts/ggml-mulmat/run.sh
#
# llama.cpp's source is the git bundle in the npm package node-llama-cpp@3.22.1,
# cloned by scripts/install-gguf-py.sh into $MIXQ_LLAMA_CPP (default
# ~/.cache/mixq/llama.cpp); it is only read. ggml's libraries are reused from
# $LLAMA/build-cpu when they are there (make llama-perplexity builds them),
# else built (CPU only, -DGGML_NATIVE=ON: all of this CPU's ISA extensions,
# AVX-512 included) into $MIXQ_GGML_BUILD (default ~/.cache/mixq/ggml-build):
# about 5 minutes on 2 cores. test-backend-ops.cpp is compiled against them
# (about a minute). Needs cmake, g++, python3.
#
# The shapes reach test-backend-ops through its --test-file option (lines
# written by cases.c with ggml's own enums and row sizes): ggml quantizes
# the weight to q8_0 and q4_0 (blocks of 32 with an f16 scale; mixq uses
# groups of 128) and, for those types, the activations to q8_0 on the fly.
# Its built-in perf cases (`test-backend-ops perf -o MUL_MAT`: 4096 rows of
# 14336 columns at batch 1 to 8 and 512, among others) can be run with the
# binary this leaves in $OUT/tools; SHAPE=4096x14336 BATCHES="1 8" measures
# the same weight shape here, beside mixq.
# test-backend-ops runs the CPU backend on hardware_concurrency()/2 threads;
# the LD_PRELOAD shim nprocs.c makes that THREADS. mixq runs with
# GOMAXPROCS=THREADS.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=scripts/ggml-mulmat
LLAMA="${MIXQ_LLAMA_CPP:-$HOME/.cache/mixq/llama.cpp}"
SHAPE="${SHAPE:-4096x4096}"
BATCHES="${BATCHES:-1 16}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
OUT="${OUT:-$(mktemp -d)}"

[ -f "$LLAMA/CMakeLists.txt" ] || scripts/install-gguf-py.sh
command -v cmake >/dev/null || { echo "ggml-mulmat: needs cmake (apt-get install cmake)"; exit 1; }
LIB="$LLAMA/build-cpu/bin"
if [ ! -f "$LIB/libggml-cpu.so" ] || [ ! -f "$LIB/libggml-base.so" ] || [ ! -f "$LIB/libggml.so" ]; then
  BUILD="${MIXQ_GGML_BUILD:-$HOME/.cache/mixq/ggml-build}"
  LIB="$BUILD/bin"
  if [ ! -f "$LIB/libggml-cpu.so" ]; then
    cmake -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF >/dev/null
    cmake --build "$BUILD" --target ggml ggml-base ggml-cpu -j"$THREADS"
  fi
fi
TOOLS="$OUT/tools"
mkdir -p "$TOOLS"
g++ -O2 -std=c++17 -I"$LLAMA/ggml/include" "$LLAMA/tests/test-backend-ops.cpp" -o "$TOOLS/test-backend-ops" \
  -L"$LIB" -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$LIB" -lpthread
gcc -O1 -I"$LLAMA/ggml/include" "$HERE/cases.c" -o "$TOOLS/cases" -L"$LIB" -lggml-base -Wl,-rpath,"$LIB"
gcc -O1 -shared -fPIC "$HERE/nprocs.c" -o "$TOOLS/nprocs.so"
go build -o "$TOOLS/mixq" ./cmd/mixq

ROWS="${SHAPE%x*}"; COLS="${SHAPE#*x}"
# shellcheck disable=SC2086
"$TOOLS/cases" "$ROWS" "$COLS" $BATCHES > "$OUT/cases.txt"
MS=""
for b in $BATCHES; do MS="$MS $b"; done
echo "ggml-mulmat: $SHAPE, batches$MS, $THREADS threads, $ROUNDS rounds; raw output in $OUT" >&2
for r in $(seq 1 "$ROUNDS"); do
  MIXQ_THREADS="$THREADS" LD_PRELOAD="$TOOLS/nprocs.so" \
    "$TOOLS/test-backend-ops" perf -b CPU --test-file "$OUT/cases.txt" > "$OUT/ggml-$r.txt" 2>&1
  GOMAXPROCS="$THREADS" "$TOOLS/mixq" bench --backend cpu --matmul-only --batch "${BATCHES// /,}" \
    --shape "$SHAPE" --json > "$OUT/mixq-$r.json"
done
grep -m1 -i "threads\|n_threads" "$OUT/ggml-1.txt" >&2 || true
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs, $(date -u +%F)" >&2
python3 "$HERE/compare.py" "$OUT"
