# mixq — see README.md. Everything here needs only Go (and gcc for -race).
GO      ?= go
BIN     := bin/mixq
DEMO    := demo
FUZZTIME ?= 15s

.PHONY: all build demo test vet unit race fuzz bench bench-cli memtest quality clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mixq

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
	$(GO) test -count=1 -race -short ./cpu ./synth ./model .

# Short runs of every fuzz target; the corpus seeds also run in `unit`.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./safetensors
	$(GO) test -run '^$$' -fuzz '^FuzzQuantizeGroups$$' -fuzztime $(FUZZTIME) ./cpu

# bench/QUALITY.md: perplexity, KL and top-1 of each policy on stories260K
# and a synthetic MoE (about 8 minutes on 2 cores).
quality:
	$(GO) run ./bench/quality -o bench/QUALITY.md

# Kernel benchmarks with the memory-copy baseline in the same run.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./cpu

bench-cli: build
	./$(BIN) bench

# Peak RSS while quantizing a >4 GB synthetic checkpoint (see bench/README.md).
memtest: build
	scripts/memtest.sh

clean:
	rm -rf bin $(DEMO)
