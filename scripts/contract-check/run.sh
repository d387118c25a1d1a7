#!/usr/bin/env bash
# The mixq arithmetic contract check: see scripts/contract-check/README.md.
#
#   scripts/contract-check/run.sh build OUTDIR   here (needs Go): write OUTDIR/cases.bin with
#                                                the Go reference and build OUTDIR/gen-cases,
#                                                a static generator that needs no Go
#   scripts/contract-check/run.sh gpu OUTDIR     on the GPU machine (needs nvcc and a driver,
#                                                no Go): compile contract.cu into OUTDIR and
#                                                run it on OUTDIR/cases.bin (regenerated with
#                                                OUTDIR/gen-cases when it is absent)
#   scripts/contract-check/run.sh pack OUTDIR    here (needs Go): only build OUTDIR/gen-cases,
#                                                for sending OUTDIR to the GPU machine, whose
#                                                working-tree transfer (64 MiB) is smaller
#                                                than cases.bin
#   scripts/contract-check/run.sh host OUTDIR    anywhere with g++: the same checks with the
#                                                kernels' per-element code run on the CPU
#
# OUTDIR is taken relative to the repository root. Exit status 0 means every
# case matched bit for bit.
set -euo pipefail

usage() {
	echo "usage: $0 build|pack|gpu|host OUTDIR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
step=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
out=$2
case "$step" in build | pack | gpu | host) mkdir -p "$out" ;; *) usage ;; esac

case "$step" in
build | pack)
	go version
	if [ "$step" = build ]; then
		go run ./scripts/contract-check/gen -o "$out"
	else
		rm -f "$out/cases.bin"
	fi
	# A static generator for machines without Go (x86-64 Linux): the gpu step
	# runs it when OUTDIR/cases.bin is absent.
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w' -o "$out/gen-cases" ./scripts/contract-check/gen
	ls -l "$out"
	;;
gpu)
	nvidia-smi -L
	nvcc --version
	if [ ! -f "$out/cases.bin" ]; then
		if [ ! -x "$out/gen-cases" ]; then
			echo "$out/cases.bin and $out/gen-cases are missing: run '$0 build $out' first" >&2
			exit 2
		fi
		echo "regenerating $out/cases.bin with $out/gen-cases"
		"$out/gen-cases" -o "$out"
	fi
	# Both must compile; sm_80's binary also carries compute_80 PTX, which the
	# driver JIT-compiles on newer GPUs, so it is run too as a second check.
	# No --use_fast_math, no -ftz: the contract keeps subnormals and IEEE division.
	nvcc -O2 -arch=sm_90 -fmad=false -o "$out/contract" scripts/contract-check/contract.cu
	nvcc -O2 -arch=sm_80 -fmad=false -o "$out/contract_sm80" scripts/contract-check/contract.cu
	cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
	rc=0
	if [ "${cap:0:1}" = 9 ]; then
		echo "=== contract (sm_90) on $out/cases.bin"
		"$out/contract" "$out/cases.bin" || rc=1
	else
		echo "compute capability $cap: skipping the sm_90 build"
	fi
	echo "=== contract_sm80 (sm_80 SASS + compute_80 PTX) on $out/cases.bin"
	"$out/contract_sm80" "$out/cases.bin" || rc=1
	exit $rc
	;;
host)
	if [ ! -f "$out/cases.bin" ]; then
		echo "$out/cases.bin is missing: run '$0 build $out' first" >&2
		exit 2
	fi
	g++ --version | head -n 1
	g++ -O2 -std=c++17 -ffp-contract=off -x c++ -o "$out/contract_host" scripts/contract-check/contract.cu
	# CONTRACT_HOST_FLAGS=--f16-exhaustive also checks the software binary16
	# conversions against the compiler's _Float16 on all 2^32 inputs.
	# shellcheck disable=SC2086
	"$out/contract_host" ${CONTRACT_HOST_FLAGS:-} "$out/cases.bin"
	;;
*)
	usage
	;;
esac
