#!/usr/bin/env bash
# Bounded-memory check: quantize a synthetic checkpoint larger than 4 GB and
# report the peak resident set size. The goal is under 1 GB whatever the
# checkpoint size, because tensors are streamed in row blocks and the input
# mapping's pages are dropped after each tensor.
#
# With --gptq instead: GPTQ on one Llama-7B-shaped decoder layer (`mixq
# bench --gptq`: the 7 linears, K up to 11008, second moments of synthetic
# activations, through the quantizer's gptq.QuantizeShared) and the same
# report; the goal there is under 2 GB (the K×K statistics are what
# count: 16·K(K+1)/2 bytes = 969 MB at K = 11008). It takes minutes on 2
# cores; GPTQ_ARGS adds flags (say --gptq-tokens 512 for a shorter run).
#
# Usage: scripts/memtest.sh [WORKDIR] (default: a temporary directory, removed at exit)
#        scripts/memtest.sh --gptq
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/mixq
[ -x "$bin" ] || go build -o "$bin" ./cmd/mixq
timev=/usr/bin/time
if [ "${1:-}" = "--gptq" ]; then
  [ -x "$timev" ] || { echo "memtest needs GNU time at $timev (Debian package 'time')" >&2; exit 1; }
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  # shellcheck disable=SC2086
  "$timev" -v "$bin" bench --backend cpu --gptq ${GPTQ_ARGS:-} 2>"$log"
  grep -E "notice|Maximum resident set size|Elapsed \(wall clock\)|Percent of CPU" "$log"
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$log")
  echo "peak RSS: $((rss_kb / 1024)) MiB ($((rss_kb * 1024 / 1000000)) MB)"
  if [ "$((rss_kb * 1024))" -ge 2000000000 ]; then
    echo "FAIL: peak RSS is not under 2 GB" >&2
    exit 1
  fi
  exit 0
fi
work=${1:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
[ -x "$timev" ] || { echo "memtest needs GNU time at $timev (Debian package 'time')" >&2; exit 1; }

# 11 Llama-7B layers in BF16: 4.45 GB (10 would be 4.05 GB but only 3.77 GiB).
[ -d "$work/in" ] || "$bin" synth --preset llama7b-layer --layers 11 --dtype bf16 -o "$work/in"
du -sb "$work/in" | awk '{printf "input: %.2f GB\n", $1/1e9}'
rm -rf "$work/out"
"$timev" -v "$bin" quantize "$work/in" -o "$work/out" --rule 'mlp=int4' >"$work/quantize.log" 2>"$work/time.log"
du -sb "$work/out" | awk '{printf "output: %.2f GB\n", $1/1e9}'
grep -E "Maximum resident set size|Elapsed \(wall clock\)|Percent of CPU" "$work/time.log"
rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/time.log")
echo "peak RSS: $((rss_kb / 1024)) MiB"
if [ "$rss_kb" -ge $((1024 * 1024)) ]; then
  echo "FAIL: peak RSS is not under 1 GiB" >&2
  exit 1
fi
