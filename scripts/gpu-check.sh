#!/usr/bin/env bash
# The one-shot GPU check of the CUDA backend, in two steps:
#
#   scripts/gpu-check.sh build        here: Go and the CUDA 11.8 headers
#   scripts/gpu-check.sh run [OUT]    on the GPU machine: a driver, no Go
#
# build puts everything the GPU machine needs in gpucheck/: the mixq binary,
# the CUDA plugin (with the PTX embedded), the parity-suite test binary, the
# golden vectors and stories260K. run takes that folder and
#   1. lists the devices (mixq devices);
#   2. runs the parity suite: every kernel family against the CPU, bit for
#      bit (random inputs with a fresh printed seed, boundary sizes, golden
#      vectors);
#   3. quantizes stories260K and a Llama-7B-layer-shaped synthetic checkpoint
#      with --backend cpu and --backend cuda and compares the sha256 of every
#      output file;
#   4. runs the GPU benchmarks (mixq bench --gpu-only);
# writes everything to OUT (default gpucheck/results: log, CSV and JSON) and
# prints a short table last. About 2-3 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
G=gpucheck

build() {
  set -e
  rm -rf "$G" && mkdir -p "$G"
  go build -o "$G/mixq" ./cmd/mixq
  go build -tags cuda -buildmode=plugin -o "$G/mixq-cuda.so" ./gpu/plugin
  go test -c -o "$G/backend.test" ./backend
  cp -r testdata/golden "$G/golden"
  { git rev-parse HEAD; git status --porcelain | grep -q . && echo "(with uncommitted changes)"; } >"$G/REV" 2>/dev/null || true
  local st=../shared/testdata/stories260K
  if [ -f "$st/model.safetensors" ]; then
    mkdir -p "$G/stories260K" && cp "$st/model.safetensors" "$st/config.json" "$G/stories260K/"
  else
    echo "gpu-check: $st not found: the stories260K identity check will be skipped" >&2
  fi
  du -sh "$G"
}

run() {
  local out=${1:-$G/results}
  mkdir -p "$out"
  local log="$out/gpu-check.log" summary="$out/summary.csv"
  : >"$log"
  echo "check,result,detail" >"$summary"
  export MIXQ_CUDA_PLUGIN=$PWD/$G/mixq-cuda.so MIXQ_GOLDEN=$PWD/$G/golden
  # cuBLAS for the FP32 baseline: the Python wheels' copy, or the toolkit's.
  local cub
  cub=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)
  export LD_LIBRARY_PATH=${cub:+$cub:}/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  echo "gpu-check of $(head -c 12 "$G/REV" 2>/dev/null || echo "an unknown revision") $(sed -n 2p "$G/REV" 2>/dev/null)" | tee -a "$log"
  nvidia-smi -L 2>&1 | tee -a "$log"
  "$G/mixq" devices 2>&1 | tee -a "$log"
  "$G/mixq" devices --json >"$out/devices.json" 2>>"$log"

  echo "== parity suite" | tee -a "$log"
  local t0=$SECONDS
  local passed failed
  if ! timeout 300 "$G/backend.test" -test.run 'TestCUDAConformance' -test.v -test.count=1 -test.timeout=240s >"$out/parity.log" 2>&1; then
    failed=$(grep -c -- '--- FAIL' "$out/parity.log")
    echo "parity,FAIL,$failed failures (see parity.log)" >>"$summary"
    grep -m5 -A3 -- '--- FAIL' "$out/parity.log" | tee -a "$log"
  elif grep -q -- '--- SKIP: TestCUDAConformance' "$out/parity.log"; then
    echo "parity,FAIL,not run: $(grep -m1 -o 'skipped: .*' "$out/parity.log")" >>"$summary"
  else
    passed=$(grep -c -- '    --- PASS' "$out/parity.log")
    echo "parity,pass,$passed subtests passed in $((SECONDS - t0)) s; $(grep -m1 -o 'seed [0-9]*' "$out/parity.log" || true)" >>"$summary"
  fi

  echo "== byte identity" | tee -a "$log"
  local tmp
  tmp=$(mktemp -d)
  if ! timeout 120 "$G/mixq" synth --preset llama7b-layer --seed 1 -o "$tmp/llama7b-layer" >>"$log" 2>&1; then
    echo "identity llama7b-layer,FAIL,mixq synth failed (see gpu-check.log)" >>"$summary"
  fi
  for model in "$G/stories260K" "$tmp/llama7b-layer"; do
    [ -d "$model" ] || { [ "$(basename "$model")" = stories260K ] && echo "identity stories260K,skipped,not built in" >>"$summary"; continue; }
    local name; name=$(basename "$model")
    for be in cpu cuda; do
      local s=$SECONDS
      timeout 300 "$G/mixq" quantize "$model" -o "$tmp/$name.$be" --backend "$be" --force >>"$log" 2>&1 || echo "quantize $name $be failed" | tee -a "$log"
      echo "quantize $name --backend $be: $((SECONDS - s)) s" >>"$log"
      (cd "$tmp/$name.$be" 2>/dev/null && sha256sum * | sort) >"$out/sha256-$name-$be.txt"
    done
    if [ -s "$out/sha256-$name-cpu.txt" ] && cmp -s "$out/sha256-$name-cpu.txt" "$out/sha256-$name-cuda.txt"; then
      echo "identity $name,pass,$(wc -l <"$out/sha256-$name-cpu.txt") files with equal sha256" >>"$summary"
    else
      echo "identity $name,FAIL,sha256 differ (see sha256-$name-*.txt)" >>"$summary"
    fi
  done
  rm -rf "$tmp"

  echo "== benchmarks" | tee -a "$log"
  if timeout 400 "$G/mixq" bench --gpu-only --backend cuda --json >"$out/bench.json" 2>>"$log"; then
    echo "bench,done,bench.json bench.csv bench.txt" >>"$summary"
  else
    echo "bench,FAIL,see gpu-check.log" >>"$summary"
  fi
  # One benchmark run; the CSV and the table are made from its JSON.
  python3 - "$out/bench.json" "$out/bench.csv" "$out/bench.txt" <<'PY' 2>>"$log" || true
import csv, json, sys
rows = json.load(open(sys.argv[1]))
keys = ["backend", "op", "precision", "shape", "bytes", "seconds", "gb_per_s", "vs_copy", "floor_seconds", "speedup", "note"]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
with open(sys.argv[3], "w") as f:
    f.write(f"{'op':22} {'prec':5} {'shape':11} {'median':>10} {'GB/s':>8} {'vs copy':>7} {'floor':>10} {'vs cuBLAS':>9}\n")
    for r in rows:
        ms = lambda v: f"{1e3 * v:.3f} ms" if v else "-"
        f.write(f"{r['op']:22} {r.get('precision', '-'):5} {r['shape']:11} {ms(r.get('seconds')):>10} "
                f"{r.get('gb_per_s', 0):8.1f} {r.get('vs_copy', 0):7.2f} {ms(r.get('floor_seconds')):>10} "
                f"{(str(round(r['speedup'], 2)) + 'x') if r.get('speedup') else '-':>9}"
                f"{('  ' + r['note']) if r.get('note') else ''}\n")
PY
  echo
  [ -f "$out/bench.txt" ] && cat "$out/bench.txt"
  echo
  column -s, -t <"$summary" 2>/dev/null || cat "$summary"
  ! grep -q ',FAIL,' "$summary"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 build | run [OUT]" >&2; exit 2 ;;
esac
