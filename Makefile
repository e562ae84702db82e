# qllama — see README.md. `make demo` runs the main job on a model it makes
# itself; `make test` runs every test CI runs.
GO      ?= go
BIN     := bin
DEMO    := demo
SHARED  := ../shared/testdata
# go-nvml's cgo prints deprecation warnings on a fresh build; they are harmless.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: all build test fuzz bench demo vet clean quality kernels build-cuda gpucheck-bins

all: build

build:
	$(GO) build -o $(BIN)/ ./tools/...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

# The test command CI runs (.ci/run): vet, unit tests, then each fuzz target
# for a few seconds.
test: vet
	$(GO) test ./...
	$(MAKE) fuzz

FUZZTIME ?= 5s
fuzz:
	@set -e; for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz' || true); do \
	    echo "fuzz $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$p; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# The main job on a default the project makes itself, no downloads: a tiny
# random Llama-3.2-architecture model and a synthetic CoQA-format file, the
# quick sweep (convert, CoQA, perplexity/KL, benchmark) on the CPU, then the
# report (demo/report/report.html). Re-running skips finished work.
demo: build
	test -f $(DEMO)/tiny-random/config.json || $(BIN)/qconvert random --shape tiny --seed 1 --out $(DEMO)/tiny-random
	$(BIN)/qinfer coqa-synth --stories 8 --seed 1 --out $(DEMO)/coqa-synth.json --text $(DEMO)/stories.txt
	$(BIN)/qinfer sweep --experiments experiments.toml --quick --limit 8 --model-dir $(DEMO)/tiny-random \
	  --coqa $(DEMO)/coqa-synth.json --ppl-text $(DEMO)/stories.txt --bench-prompts 128,512 --bench-batches 1,8 --out $(DEMO)/results
	$(BIN)/qreport --results $(DEMO)/results --out $(DEMO)/report
	@echo "report: $(DEMO)/report/report.html"

# CUDA backend (build tag cuda; needs cuda.h and the libcuda link stub from
# Debian's nvidia-cuda-toolkit, see ../shared/docs/cuda-build.md).
CUDA_LDFLAGS ?= -L/usr/lib/x86_64-linux-gnu/stubs
# Regenerate kernels/*.ptx, *.fatbin and gen.sum (needs nvcc 11.8+).
kernels:
	NVCC=$${NVCC:-nvcc} kernels/gen.sh
# The tools with the CUDA backend.
build-cuda:
	CGO_ENABLED=1 CGO_LDFLAGS="$(CUDA_LDFLAGS)" $(GO) build -tags cuda -o $(BIN)/cuda/ ./tools/...
# What scripts/gpu-check.sh expects on the GPU machine: carry gpudata/bins.tar.xz
# and gpudata/models.tar.xz (the device call takes at most 64 MiB).
gpucheck-bins: build-cuda
	CGO_ENABLED=1 CGO_LDFLAGS="$(CUDA_LDFLAGS)" $(GO) test -c -tags cuda -trimpath -ldflags '-s -w' -o gpubin/cuda.test ./infer/cuda
	$(GO) build -trimpath -ldflags '-s -w' -o gpubin/ ./tools/qconvert
	CGO_ENABLED=1 CGO_LDFLAGS="$(CUDA_LDFLAGS)" $(GO) build -tags cuda -trimpath -ldflags '-s -w' -o gpubin/ ./tools/qinfer
	mkdir -p gpudata && tar -C $(SHARED) -cJf gpudata/models.tar.xz models/stories260k models/random_llama32
	tar -C gpubin -cf - cuda.test qconvert qinfer | xz -T0 -6 > gpudata/bins.tar.xz

# docs/QUALITY.md: every packed format of stories260k against FP32 (needs jq).
quality: build
	scripts/quality.sh

clean:
	rm -rf $(BIN) $(DEMO)
