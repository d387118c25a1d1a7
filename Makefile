# mixq — see README.md. The default targets need only Go and gcc; ptx,
# cuda-check, plugin and gpu-check need the CUDA 11.8 toolkit
# (scripts/install-cuda-toolkit.sh).
GO      ?= go
BIN     := bin/mixq
PLUGIN  := bin/mixq-cuda.so
DEMO    := demo
FUZZTIME ?= 15s

.PHONY: all build demo test vet unit race fuzz bench bench-cli memtest memtest-gptq quality clean llama-perplexity llama-compare \
	ptx ptx-check sim-kernels cuda-check plugin cuda gpu-check gpu-check-build

all: build

VERSION ?= $(shell git describe --always --dirty 2>/dev/null)
LDFLAGS := -X main.buildVersion=$(VERSION)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/mixq

# The quick start: synthesize the seed design's model (12 layers, d_model 512,
# 8 experts, vocab 30000), estimate, quantize, inspect, and print the sizes.
demo: build
	@test -d $(DEMO)/seed || ./$(BIN) synth --preset seed --seed 1 -o $(DEMO)/seed
	./$(BIN) estimate $(DEMO)/seed --target 6
	./$(BIN) quantize $(DEMO)/seed -o $(DEMO)/seed-mixq --force
	./$(BIN) inspect $(DEMO)/seed-mixq | head -n 12
	@echo "..."
	@echo
	@echo "size of $(DEMO)/seed (bf16) and $(DEMO)/seed-mixq on disk:"
	@du -sh $(DEMO)/seed $(DEMO)/seed-mixq

test: vet unit race fuzz

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

# The concurrent packages again under the race detector (short mode).
race:
	$(GO) test -count=1 -race -short ./cpu ./synth ./model ./gpu/... ./backend ./gptq .

# Short runs of every fuzz target; the corpus seeds also run in `unit`.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./safetensors
	$(GO) test -run '^$$' -fuzz '^FuzzQuantizeGroups$$' -fuzztime $(FUZZTIME) ./cpu
	$(GO) test -run '^$$' -fuzz '^FuzzMatMul$$' -fuzztime $(FUZZTIME) ./cpu
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./qformat
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzIndex$$' -fuzztime $(FUZZTIME) ./checkpoint
	$(GO) test -run '^$$' -fuzz '^FuzzTokens$$' -fuzztime $(FUZZTIME) ./cmd/mixq
	$(GO) test -run '^$$' -fuzz '^FuzzRules$$' -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run '^$$' -fuzz '^FuzzCalibrationFile$$' -fuzztime $(FUZZTIME) ./importance
	$(GO) test -run '^$$' -fuzz '^FuzzGradients$$' -fuzztime $(FUZZTIME) ./importance
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./gguf

# bench/QUALITY.md: perplexity, KL and top-1 of each way of quantizing
# minillama and stories260K, every row made by `$(BIN) quantize`, beside
# llama.cpp's variants from bench/llamacpp.json (make llama-compare) when
# it exists (44 minutes on 2 busy cores, load average 5-10; most of it the
# budget's KL sensitivity, a few minutes per budget row).
quality: build
	$(GO) run ./bench/quality -mixq $(BIN) -o bench/QUALITY.md

# llama.cpp's perplexity of minillama's GGUF exports (F32, static INT8,
# INT4 group 64) against mixq's on the same tokens and positions: builds
# llama-perplexity CPU-only from the source scripts/install-gguf-py.sh
# fetches (about 10 minutes on 2 cores the first time; needs cmake).
# Not part of `make test`. Figures: docs/EXPORT.md.
llama-perplexity:
	scripts/llama-perplexity.sh

# bench/llamacpp.json: llama.cpp's Q4_0 (--pure and default layout) and
# Q4_K_M (with and without an imatrix) of minillama and stories260K, each
# dequantized with gguf-py and scored by mixq eval against F32, with the
# GGUF sizes that make quality matches mixq to. Builds llama-quantize,
# llama-imatrix and llama-completion CPU-only from the source
# scripts/install-gguf-py.sh fetches; about 37 minutes on 2 busy cores. Not part
# of `make test`. MODELS=minillama reruns one model only.
llama-compare:
	scripts/llama-quant-compare.sh

# Kernel benchmarks with the memory-copy baseline in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./cpu

bench-cli: build
	./$(BIN) bench

# Peak RSS while quantizing a >4 GB synthetic checkpoint (see bench/README.md).
memtest: build
	scripts/memtest.sh

# Peak RSS (goal: under 2 GB) and time of GPTQ on one Llama-7B-shaped layer
# (minutes on 2 cores).
memtest-gptq: build
	scripts/memtest.sh --gptq

# --- CUDA ------------------------------------------------------------------

# Regenerate kernels/ptx from kernels/*.cu (nvcc, compute_80 and compute_90).
ptx:
	scripts/ptx.sh

# CI: the committed PTX must be what the committed sources compile to.
ptx-check: ptx
	@git diff --exit-code --stat -- kernels/ptx || { echo "kernels/ptx is stale: run make ptx and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- kernels/ptx)" || { git status --short -- kernels/ptx; echo "untracked PTX: run make ptx and commit"; exit 1; }

# Regenerate the emulator's copy of the kernels (gpu/sim/zkernels.c).
sim-kernels:
	$(GO) run ./gpu/sim/gen

# Compile (not run) the CUDA code path: vet with -tags cuda, and link the
# plugin against the toolkit's libcuda.
cuda-check:
	$(GO) vet -tags cuda ./cuda/... ./gpu/... ./backend
	$(GO) build -tags cuda -buildmode=plugin -o /dev/null ./gpu/plugin

# The CUDA backend plugin, loaded by bin/mixq when a GPU is usable. Build
# both together: a plugin loads only into a binary built from the same tree.
plugin:
	$(GO) build -tags cuda -buildmode=plugin -o $(PLUGIN) ./gpu/plugin

cuda: build plugin

# The one-shot GPU check: build here (Go + CUDA 11.8 headers), run on a GPU
# machine (driver only, no Go). See scripts/gpu-check.sh.
gpu-check-build:
	scripts/gpu-check.sh build

gpu-check: gpu-check-build
	scripts/gpu-check.sh run

clean:
	rm -rf bin $(DEMO) gpucheck
