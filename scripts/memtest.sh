#!/usr/bin/env bash
# Bounded-memory check: quantize a synthetic checkpoint larger than 4 GB and
# report the peak resident set size. The goal is under 1 GB whatever the
# checkpoint size, because tensors are streamed in row blocks and the input
# mapping's pages are dropped after each tensor.
#
# Usage: scripts/memtest.sh [WORKDIR] (default: a temporary directory, removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/mixq
[ -x "$bin" ] || go build -o "$bin" ./cmd/mixq
work=${1:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
timev=/usr/bin/time
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
