#!/usr/bin/env bash
# make llama-perplexity: llama.cpp's own perplexity of minillama's GGUF
# exports against mixq's on the same tokens and the same scored positions.
#
#   1. build llama.cpp's llama-perplexity and llama-tokenize, CPU only, from
#      the source scripts/install-gguf-py.sh fetched ($MIXQ_LLAMA_CPP);
#   2. export minillama as an all-F32 GGUF and as GGUFs of the static policy
#      (INT8, group 128) and of all-INT4 group 64;
#   3. llama-perplexity -c 256 on eval.txt for each;
#   4. mixq on the same chunks (llama-tokenize's ids, BOS first) and the same
#      positions (the second half of each chunk, as llama-perplexity scores):
#      the original model for F32, the dequantized checkpoint (the floats
#      `mixq eval --quantized` decodes) for the quantized exports;
#   5. require |Δ| < 0.1% for F32 and < 1% for the quantized exports
#      (llama.cpp quantizes activations to Q8 for Q4_0/Q8_0 matmuls, so it
#      cannot be exact);
#   6. the same for F32 exports of the synthetic Mixtral (stacked experts)
#      and tied-embedding Llama, with a byte vocabulary (|Δ| < 0.1%);
#   and before all that, llama-tokenize of the first 100 lines of eval.txt
#   must give SentencePiece's ids (eval_tokens.json).
# About 10 minutes to build on 2 cores; running takes mostly mixq eval's
# three passes over the text (CHUNKS=N evaluates only the first N chunks). Needs cmake, g++,
# python3-numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA="${MIXQ_LLAMA_CPP:-$HOME/.cache/mixq/llama.cpp}"
MODEL="${MINILLAMA:-../shared/testdata/minillama}"
PY="${MIXQ_PYTHON:-/usr/bin/python3}"
NCTX=256
THREADS="${THREADS:-2}"
CHUNKS="${CHUNKS:-0}"   # evaluate only the first CHUNKS chunks (0: all)

[ -f "$LLAMA/CMakeLists.txt" ] || scripts/install-gguf-py.sh
command -v cmake >/dev/null || { echo "llama-perplexity: needs cmake (apt-get install cmake)"; exit 1; }
BUILD="$LLAMA/build-cpu"
if [ ! -x "$BUILD/bin/llama-perplexity" ] || [ ! -x "$BUILD/bin/llama-tokenize" ]; then
  cmake -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF >/dev/null
  cmake --build "$BUILD" --target llama-perplexity llama-tokenize -j"$THREADS"
fi
go build -o bin/mixq ./cmd/mixq
MIXQ=bin/mixq
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT

# Quantize (mixq layout) and export each variant.
declare -A FLAGS=([f32]="--rule .*=f32" [static]="" [int4-g64]="--rule .*=int4 --group-size 64")
for v in f32 static int4-g64; do
  # shellcheck disable=SC2086
  $MIXQ quantize "$MODEL" -o "$W/$v" ${FLAGS[$v]} >/dev/null 2>&1
  $MIXQ export "$W/$v" -o "$W/$v.gguf" --format gguf --tokenizer-dir "$MODEL" >/dev/null
done

# The exported vocabulary must tokenize as SentencePiece does.
"$PY" scripts/llama_ppl.py tokcheck "$BUILD/bin/llama-tokenize" "$W/static.gguf" "$MODEL/eval.txt" "$MODEL/eval_tokens.json" 100

# llama.cpp's tokens of eval.txt, cut as llama-perplexity cuts them.
"$BUILD/bin/llama-tokenize" -m "$W/f32.gguf" -f "$MODEL/eval.txt" --ids --log-disable > "$W/ids.txt" 2>/dev/null
"$PY" scripts/llama_ppl.py chunks "$W/ids.txt" $NCTX 1 "$W/chunks.json" "$CHUNKS"
NCHUNK="$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['sequences']))" "$W/chunks.json")"
VOCAB=2048

printf '%-10s %12s %12s %9s %s\n' export llama.cpp mixq delta limit > "$W/table"
fail=0
for v in f32 static int4-g64; do
  llama="$("$BUILD/bin/llama-perplexity" -m "$W/$v.gguf" -f "$MODEL/eval.txt" -c $NCTX -b $NCTX \
    --chunks "$NCHUNK" -t "$THREADS" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')"
  ref="$MODEL"
  if [ "$v" != f32 ]; then
    $MIXQ dequantize "$W/$v" -o "$W/$v-deq" >/dev/null 2>&1
    ref="$W/$v-deq"
  fi
  $MIXQ eval --model "$ref" --tokens "$W/chunks.json" --logits-out "$W/$v.logits" >/dev/null 2>&1
  mine="$("$PY" scripts/llama_ppl.py ppl "$W/$v.logits" "$W/chunks.json" $VOCAB)"
  limit=1.0; [ "$v" = f32 ] && limit=0.1
  delta="$("$PY" -c "print(f'{100*(float(\"$llama\")/float(\"$mine\")-1):+.4f}')")"
  ok="$("$PY" -c "print(abs(float(\"$delta\")) < $limit)")"
  [ "$ok" = True ] || fail=1
  printf '%-10s %12s %12s %8s%% <%s%%\n' "$v" "$llama" "$mine" "$delta" "$limit" >> "$W/table"
done
echo "minillama eval.txt, $NCHUNK chunks of $NCTX tokens, second half of each scored"
cat "$W/table"

# The synthetic Mixtral (experts stacked) and tied-embedding Llama (rows of
# 172), F32 exports with a byte vocabulary, on 20 kB of eval.txt in ASCII:
# the layout changes must give mixq's perplexity within 0.1%.
PYTHONPATH="$LLAMA/gguf-py" "$PY" scripts/byte_vocab.py "$W/bytes.gguf"
head -c 20000 "$MODEL/eval.txt" | LC_ALL=C tr -cd '\11\12\15\40-\176' > "$W/ascii.txt"
printf '%-10s %12s %12s %9s %s\n' export llama.cpp mixq delta limit > "$W/table2"
for p in tiny-moe tiny; do
  $MIXQ synth --preset "$p" -o "$W/$p" >/dev/null
  $MIXQ quantize "$W/$p" -o "$W/$p-f32" --rule '.*=f32' >/dev/null 2>&1
  $MIXQ export "$W/$p-f32" -o "$W/$p.gguf" --format gguf --vocab-from "$W/bytes.gguf" >/dev/null
  "$BUILD/bin/llama-tokenize" -m "$W/$p.gguf" -f "$W/ascii.txt" --ids --log-disable > "$W/$p.ids" 2>/dev/null
  "$PY" scripts/llama_ppl.py chunks "$W/$p.ids" 128 1 "$W/$p.json" >/dev/null
  llama="$("$BUILD/bin/llama-perplexity" -m "$W/$p.gguf" -f "$W/ascii.txt" -c 128 -b 128 -t "$THREADS" 2>&1 \
    | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')"
  $MIXQ eval --model "$W/$p" --tokens "$W/$p.json" --logits-out "$W/$p.logits" >/dev/null 2>&1
  mine="$("$PY" scripts/llama_ppl.py ppl "$W/$p.logits" "$W/$p.json" 256)"
  delta="$("$PY" -c "print(f'{100*(float(\"$llama\")/float(\"$mine\")-1):+.4f}')")"
  ok="$("$PY" -c "print(abs(float(\"$delta\")) < 0.1)")"
  [ "$ok" = True ] || fail=1
  printf '%-10s %12s %12s %8s%% <0.1%%\n' "$p-f32" "$llama" "$mine" "$delta" >> "$W/table2"
done
echo "synthetic models, F32 exports, byte vocabulary, chunks of 128"
cat "$W/table2"
exit $fail
