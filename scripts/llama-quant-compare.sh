#!/usr/bin/env bash
# make llama-compare: llama.cpp's 4-bit quantizations of minillama and
# stories260K, measured the way mixq's own rows are (issue 10, "Goals"), in
# bench/llamacpp.json, which bench/quality (make quality) reads to put mixq
# at exactly those sizes.
#
# Per model:
#   1. mixq's F32 GGUF: `mixq quantize M -o D --rule '.*=f32'`, then
#      `mixq export D -o f32.gguf --format gguf` (minillama with its
#      tokenizer.model; stories260K has none, so --no-vocab);
#   2. llama-quantize (llama.cpp built CPU-only from the source
#      scripts/install-gguf-py.sh fetched) to four variants:
#        q4_0-pure       Q4_0 --pure (every matrix Q4_0)
#        q4_0            Q4_0, llama.cpp's default layout (Q6_K head)
#        q4_k_m-imatrix  Q4_K_M with an importance matrix from llama-imatrix
#        q4_k_m          Q4_K_M without one
#      The imatrix: minillama's calib.txt, chunks of 256 tokens.
#      stories260K has no text and no tokenizer, so its F32 model is also
#      exported with a synthetic vocabulary (gguf_dequant.py vocab: id i is
#      one CJK character), CALIB_SEQS sequences of 128 tokens are sampled from
#      it by llama-completion (temperature 1, no top-k/top-p/min-p, seeds
#      2, 3, ...), and llama-imatrix reads that text back (--parse-special,
#      chunks of 128 that start each at a sequence's BOS): the same tokens the
#      model sampled. The imatrix only sees blk.* tensors (llama.cpp's default).
#      Rows that llama.cpp's block size does not divide (stories260K's
#      172-wide down projections, its 64-wide rows under Q4_K) take
#      llama-quantize's own fallback types; ggml_types lists what was written;
#   3. gguf_dequant.py dequantizes every tensor with gguf-py, undoes the Q/K
#      row permutation and the expert stacking of mixq's exporter, and writes
#      an F32 Hugging Face checkpoint with the original config.json;
#   4. `mixq quantize DEQ -o Q --rule '.*=f32'` (F32 tensors are kept
#      exactly: checked below) and `mixq eval --model M --quantized Q --json`
#      on minillama's eval_tokens.json, and on stories260K on the sequences
#      bench/quality evaluates (--sample 32 --seq-len 128 --seed 1: 32
#      sequences sampled from the F32 model).
# Checks that stop the script: the F32 GGUF dequantizes bit for bit to the
# original checkpoint (so the permutation is undone exactly), and every
# mixq F32 checkpoint dequantizes bit for bit to the floats gguf-py gave.
#
# bench/llamacpp.json (fields):
#   version        llama.cpp's version (CMakeLists) and commit, and where the
#                  source came from
#   date, machine  when (UTC) and where the last run ran; mixq_commit; threads;
#                  backend (each model also carries the date and mixq_commit
#                  of the run that measured it)
#   ratio_note     what the ratio counts
#   models[]       model (minillama | stories260K), params (every element of
#                  the original safetensors), f32_bytes (4·params), eval_set,
#                  scored_positions, ppl_f32, and variants[]:
#     variant            q4_0-pure | q4_0 | q4_k_m-imatrix | q4_k_m
#     command            the llama-quantize command (file names as here)
#     imatrix_command    the llama-imatrix command (imatrix variant only)
#     ggml_types         ggml type -> number of tensors of that type
#     file_bytes         the whole GGUF file
#     bytes_without_vocab  file_bytes minus the serialized bytes of its
#                        tokenizer.* metadata key/value pairs (gguf-py's parse;
#                        alignment padding left as is). mixq carries the
#                        tokenizer as separate files its size does not count,
#                        so this is the fair size to match mixq to (and the
#                        conservative one for mixq). stories260K's GGUFs have
#                        no vocabulary: the two are equal there
#     tensor_bytes       the tensor data alone (what issue 10's first table
#                        divided by; the header, metadata and tensor infos
#                        that the two sizes above add are about 4 kB here)
#     ratio              4·params / bytes_without_vocab (F32 size over it)
#     ratio_file         4·params / file_bytes
#     ppl, f32_ppl, delta_ppl_pct, kl_mean, kl_p99, top1
#                        from `mixq eval --json` (quantized.perplexity,
#                        original.perplexity, delta_perplexity_pct, kl_mean,
#                        kl_p99, top1_agreement); KL is KL(F32 ‖ llama.cpp)
#                        per scored position, in nats
# A run with MODELS=... keeps the other models already in the output file.
#
# Environment: MODELS ("minillama stories260K"), OUT (bench/llamacpp.json),
# THREADS (2), BACKEND (cpu; auto uses a GPU), CALIB_SEQS (32), KEEP (a
# directory to keep the intermediate files in), MIXQ_LLAMA_CPP, MIXQ_PYTHON.
# Needs cmake, g++, python3-numpy (scripts/install-gguf-py.sh installs numpy
# and the source). Time on 2 busy cores: about 37 minutes, nearly all of it
# mixq eval's four passes over minillama's 41,728 tokens; stories260K takes
# seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA="${MIXQ_LLAMA_CPP:-$HOME/.cache/mixq/llama.cpp}"
PY="${MIXQ_PYTHON:-/usr/bin/python3}"
THREADS="${THREADS:-2}"
BACKEND="${BACKEND:-cpu}"
MODELS="${MODELS:-minillama stories260K}"
OUT="${OUT:-bench/llamacpp.json}"
CALIB_SEQS="${CALIB_SEQS:-32}"
TESTDATA=../shared/testdata
NICE="nice -n 5"

[ -f "$LLAMA/CMakeLists.txt" ] || scripts/install-gguf-py.sh
"$PY" -c 'import numpy' 2>/dev/null || scripts/install-gguf-py.sh
command -v cmake >/dev/null || { echo "llama-compare: needs cmake (apt-get install cmake)" >&2; exit 1; }
BUILD="$LLAMA/build-cpu"
BIN="$BUILD/bin"
need=()
for t in llama-quantize llama-imatrix llama-completion; do [ -x "$BIN/$t" ] || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "llama-compare: building ${need[*]} (CPU only; minutes the first time)"
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF >/dev/null
  $NICE cmake --build "$BUILD" --target "${need[@]}" -j"$THREADS" >/dev/null
fi
export PYTHONPATH="$LLAMA/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
H=scripts/gguf_dequant.py

if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP"; W="$(cd "$KEEP" && pwd)"
else
  W="$(mktemp -d)"
  trap 'rm -rf "$W"' EXIT
fi
trap 'echo "llama-compare: interrupted" >&2; exit 130' INT TERM
MIXQ="$W/mixq"
go build -o "$MIXQ" ./cmd/mixq

LLAMA_VERSION="$(sed -n 's/^set(LLAMA_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)).*/\2/p' "$LLAMA/CMakeLists.txt" | paste -sd.)"
LLAMA_COMMIT="$(git -C "$LLAMA" log -1 --format=%h 2>/dev/null || echo unknown)"
MACHINE="$(uname -sm), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
MIXQ_COMMIT="$(git describe --always --dirty 2>/dev/null || echo unknown)"
META="$W/meta.json"

step() { echo "llama-compare: $*" >&2; }

# quiet CMD...: run CMD with its output in $W/log, shown only if it fails.
quiet() {
  "$@" >"$W/log" 2>&1 || { tail -30 "$W/log" >&2; echo "llama-compare: failed: $*" >&2; exit 1; }
}

models_json=()
for name in $MODELS; do
  M="$TESTDATA/$name"
  [ -f "$M/config.json" ] || { echo "llama-compare: $M/config.json: no such model" >&2; exit 1; }
  step "$name: F32 GGUF"
  quiet $MIXQ quantize "$M" -o "$W/$name-f32" --rule '.*=f32'
  case "$name" in
    minillama)
      quiet $MIXQ export "$W/$name-f32" -o "$W/$name-f32.gguf" --format gguf --tokenizer-dir "$M"
      EVAL=(--tokens "$M/eval_tokens.json")
      EVAL_SET="eval_tokens.json (held-out text, every position after the first scored)"
      IMAT_CMD=(llama-imatrix -m "$name-f32.gguf" -f calib.txt -c 256 -b 256 -t "$THREADS" --no-ppl -o "$name-imatrix.gguf")
      cp "$M/calib.txt" "$W/calib.txt"
      ;;
    stories260K)
      quiet $MIXQ export "$W/$name-f32" -o "$W/$name-f32.gguf" --format gguf --no-vocab
      # The synthetic vocabulary, only for llama.cpp's sampler and imatrix.
      vocab="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$M/config.json")"
      "$PY" $H vocab "$W/vocab.gguf" "$vocab"
      quiet $MIXQ export "$W/$name-f32" -o "$W/$name-f32-vocab.gguf" --format gguf --vocab-from "$W/vocab.gguf"
      step "$name: sampling $CALIB_SEQS calibration sequences with llama-completion"
      : >"$W/calib.txt"
      for i in $(seq 1 "$CALIB_SEQS"); do
        # llama-completion's log thread sometimes loses the end of its output
        # at exit (the same seed gives the same tokens): retry until the
        # sequence is whole, BOS + 127 tokens and the closing blank line.
        # One thread: on a busy machine a second one makes this tiny model
        # forty times slower.
        for try in 1 2 3 4 5 6 7 8 9 10; do
          "$BIN/llama-completion" -m "$W/$name-f32-vocab.gguf" -p "" -n 127 --temp 1 --top-k 0 --top-p 1 --min-p 0 \
            -s $((i + 1)) -no-cnv --simple-io --no-warmup --ignore-eos -sp -c 128 -t 1 </dev/null \
            >"$W/gen.txt" 2>/dev/null || true
          "$PY" -c '
import re, sys
t = open(sys.argv[1], encoding="utf-8").read()
if not t.endswith("\n\n") or not t.startswith("<s>"):
    sys.exit(3)
t = t[3:].rstrip("\n")
if len(re.findall("<s>|<unk>|</s>|[\u4e00-\u9fff]", t)) != 127:
    sys.exit(3)
# one filler token after each sequence: llama-imatrix turns the first token
# of every chunk into BOS, so each chunk of 128 is BOS + 127 sampled tokens.
sys.stdout.write(t + chr(0x4E00 + 3))' "$W/gen.txt" >>"$W/calib.txt" && break
          [ "$try" -lt 10 ] || { echo "llama-compare: llama-completion gave no whole sequence for seed $((i + 1))" >&2; exit 1; }
        done
      done
      EVAL=(--sample 32 --seq-len 128 --seed 1)
      EVAL_SET="32 sequences of 128 tokens sampled at temperature 1 from the F32 model (mixq eval --sample 32 --seq-len 128 --seed 1, as bench/quality)"
      IMAT_CMD=(llama-imatrix -m "$name-f32-vocab.gguf" -f calib.txt -c 128 -b 128 -t "$THREADS" --no-ppl --parse-special -o "$name-imatrix.gguf")
      ;;
    *) echo "llama-compare: no recipe for model $name" >&2; exit 1 ;;
  esac

  step "$name: the F32 GGUF must dequantize to the original bit for bit"
  "$PY" $H dequant "$W/$name-f32.gguf" "$M" "$W/$name-f32-deq" >/dev/null
  "$PY" $H same "$W/$name-f32-deq" "$M" >/dev/null

  step "$name: importance matrix (${IMAT_CMD[*]})"
  (cd "$W" && quiet $NICE "$BIN/${IMAT_CMD[0]}" "${IMAT_CMD[@]:1}")
  cp "$W/log" "$W/imatrix.log"
  if [ "$name" = stories260K ]; then
    # The text must tokenize back to exactly the sampled ids, one per
    # character (or <s>/<unk>/</s>), BOS + 127 in each chunk of 128.
    "$BIN/llama-tokenize" -m "$W/$name-f32-vocab.gguf" -f "$W/calib.txt" --ids --log-disable >"$W/calib.ids" 2>/dev/null
    "$PY" $H calibcheck "$W/calib.txt" "$W/calib.ids" "$CALIB_SEQS"
    grep -q "computing over $CALIB_SEQS chunks" "$W/imatrix.log" ||
      { echo "llama-compare: llama-imatrix did not see $CALIB_SEQS chunks of 128:" >&2; grep "computing over" "$W/imatrix.log" >&2; exit 1; }
  fi
  f32="$name-f32.gguf"
  declare -A CMD=(
    [q4_0-pure]="--pure $f32 $name-q4_0-pure.gguf Q4_0 $THREADS"
    [q4_0]="$f32 $name-q4_0.gguf Q4_0 $THREADS"
    [q4_k_m-imatrix]="--imatrix $name-imatrix.gguf $f32 $name-q4_k_m-imatrix.gguf Q4_K_M $THREADS"
    [q4_k_m]="$f32 $name-q4_k_m.gguf Q4_K_M $THREADS"
  )
  variants=()
  for v in q4_0-pure q4_0 q4_k_m-imatrix q4_k_m; do
    step "$name $v: llama-quantize ${CMD[$v]}"
    # shellcheck disable=SC2086
    (cd "$W" && quiet $NICE "$BIN/llama-quantize" ${CMD[$v]})
    g="$W/$name-$v.gguf"
    "$PY" $H dequant "$g" "$M" "$W/$name-$v-deq" >/dev/null
    quiet $MIXQ quantize "$W/$name-$v-deq" -o "$W/$name-$v-mixq" --rule '.*=f32'
    # F32 kept tensors must be exact: mixq decodes what gguf-py decoded.
    quiet $MIXQ dequantize "$W/$name-$v-mixq" -o "$W/$name-$v-back"
    "$PY" $H same "$W/$name-$v-back" "$W/$name-$v-deq" >/dev/null
    step "$name $v: mixq eval"
    $NICE $MIXQ eval --model "$M" --quantized "$W/$name-$v-mixq" "${EVAL[@]}" --backend "$BACKEND" --json \
      >"$W/$name-$v.eval.json"
    imat=""
    [ "$v" = q4_k_m-imatrix ] && imat="${IMAT_CMD[*]}"
    variants+=("$("$PY" -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "command": sys.argv[2], "imatrix_command": sys.argv[3], "gguf": sys.argv[4], "eval": sys.argv[5]}))' \
      "$v" "llama-quantize ${CMD[$v]}" "$imat" "$g" "$W/$name-$v.eval.json")")
  done
  unset CMD
  models_json+=("$("$PY" -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "dir": sys.argv[2], "eval_set": sys.argv[3], "variants": [json.loads(v) for v in sys.argv[4:]]}))' \
    "$name" "$M" "$EVAL_SET" "${variants[@]}")")
done

"$PY" -c '
import json, sys
meta = {
    "version": f"llama.cpp {sys.argv[1]} (commit {sys.argv[2]}; source: node-llama-cpp@3.22.1 llama/gitRelease.bundle, release tag v{sys.argv[1]})",
    "date": sys.argv[3], "machine": sys.argv[4], "mixq_commit": sys.argv[5],
    "threads": int(sys.argv[6]), "backend": sys.argv[7],
    "ratio_note": "ratio = 4*params / bytes_without_vocab, params = every element of the original safetensors (F32 size); ratio_file uses the whole file",
}
json.dump({"meta": meta, "models": [json.loads(m) for m in sys.argv[9:]]}, open(sys.argv[8], "w"))' \
  "$LLAMA_VERSION" "$LLAMA_COMMIT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MACHINE" "$MIXQ_COMMIT" "$THREADS" "$BACKEND" \
  "$META" "${models_json[@]}"
"$PY" $H report "$OUT" "$META"
"$PY" $H table "$OUT"
