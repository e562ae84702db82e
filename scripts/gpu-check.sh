#!/usr/bin/env bash
# gpu-check.sh: the one device call of the CUDA backend (issue 5). It builds
# nothing: the binaries come built from the CPU machine (see docs/PERF.md,
# "CUDA backend"):
#   gpubin/cuda.test   go test -c -tags cuda ./infer/cuda
#   gpubin/qconvert    go build ./tools/qconvert
# and the two small shared models are carried as gpudata/models.tar.xz, the
# binaries as gpudata/bins.tar.xz (`make gpucheck-bins` makes both; the
# paths are ignored and named in the device call's carry). It unpacks them where
# testutil looks (../shared/testdata/models), makes a random full-size
# Llama-3.2-1B with qconvert random, runs every GPU test, then the benchmarks
# (GPTQ and AWQ of the 1B, decode/prefill per format), and prints the
# benchmark table last. Logs go to $OUT (or /tmp).
# Last, the quick study (issue 7) runs on the GPU with gpubin/qinfer (built
# with -tags cuda): qinfer sweep --quick over the random 1B with a synthetic
# CoQA file and a synthetic perplexity text; its results (model files
# excluded) come back as $OUT/study-results.tar.gz for qreport.
# Usage: scripts/gpu-check.sh [test-regexp]   (default: all tests)
#        PARTS="tests perf study" selects parts (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
run=${1:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
if [ -f gpudata/bins.tar.xz ]; then
	# The binaries travel xz-compressed (the device call carries at most 64 MiB).
	mkdir -p gpubin && tar -C gpubin -xJf gpudata/bins.tar.xz
fi
if [ ! -e ../shared/testdata/models ]; then
	mkdir -p ../shared/testdata
	if [ -f gpudata/models.tar.xz ]; then
		tar -C ../shared/testdata -xJf gpudata/models.tar.xz
	else
		ln -sfn "$PWD/gpudata/models" ../shared/testdata/models
	fi
fi
model=/tmp/qllama-random-1b
if [ ! -f "$model/config.json" ]; then
	gpubin/qconvert random --shape llama-3.2-1b --seed 1 --out "$model" | tail -1
fi
parts=${PARTS:-tests perf study}
status=0
if [[ $parts == *tests* ]]; then
(cd infer/cuda
../../gpubin/cuda.test -test.v -test.run "$run" -test.timeout 540s -model1b "$model" 2>&1 \
	| tee "$out/gpu-tests.log" | grep -E '^(--- |ok|FAIL|PASS|device:)|worst|Error|error' || true
grep -q '^FAIL' "$out/gpu-tests.log" && exit 1
if [ "${NCU:-1}" = 1 ] && command -v ncu >/dev/null; then
	# Per-kernel GPU time of 4 batch-1 F16 decode steps (the prefill's
	# launches are skipped: 1 embed + 16*10 per layer (RMSNorms apart, q/k/v apart at 128 rows) + norm + head + 2 argmax = 165;
	# a decode step is then 1 embed + 16*5 (attention with RoPE folded in) + lm_head + 2 argmax = 84 launches).
	timeout 240 ncu --clock-control none --metrics gpu__time_duration.sum --launch-skip 165 \
		--print-summary per-kernel ../../gpubin/cuda.test -test.run '^TestProfile$' -profile -model1b "$model" \
		> "$out/ncu.txt" 2>&1 || echo "ncu failed (see $out/ncu.txt)"
	awk '/Invocations/ {name=$1; grid=$2$3$4; inv=$NF} /gpu__time_duration.sum/ {printf "ncu %-14s grid %-14s calls %4s  mean %8s us\n", name, grid, inv, $NF}' "$out/ncu.txt"
fi
) || status=1
fi
if [[ $parts == *study* ]]; then
	# The quick sweep on the GPU plus GPTQ 4-bit (its calibration, 128 x 2048
	# tokens of other synthetic stories, also on the GPU): convert, CoQA
	# (synthetic, 4 stories), perplexity and KL against the checkpoint (both
	# on the GPU; 4 windows of 512 tokens of 64 synthetic stories, about 3300
	# tokens), benchmark.
	study=/tmp/qllama-study
	rm -rf "$study" && mkdir -p "$study"
	gpubin/qinfer coqa-synth --stories 4 --seed 1 --out "$study/coqa.json"
	gpubin/qinfer coqa-synth --stories 64 --seed 2 --out "$study/ppl-coqa.json" --text "$study/ppl.txt"
	gpubin/qinfer coqa-synth --stories 96 --seed 3 --out "$study/calib-coqa.json" --text "$study/calib.txt"
	gpubin/qinfer sweep --experiments experiments.toml --only fp16_baseline,bnb_4bit_nf4,gptq_4bit_g128,rtn_int3_g128 \
		--limit 4 --model-dir "$model" --coqa "$study/coqa.json" --calib "$study/calib.txt" \
		--ppl-text "$study/ppl.txt" --ppl-ctx 512 --ppl-windows 4 \
		--device cuda --gpus 0 --bench-prompts 128,512,2048 --bench-batches 1,8,32,64 --out "$study/results" 2>&1 \
		| tee "$out/study.log" | grep -E 'done in|failed|sweep:' || status=1
	# A failed experiment leaves its model.gguf: keep model files out.
	tar -C "$study" --exclude='*.gguf' -czf "$out/study-results.tar.gz" results
fi
if [[ $parts != *perf* ]]; then
	exit $status
fi
cd infer/cuda
# The calibration benchmarks (GPTQ 128 x 2048, AWQ 128 x 512 tokens on the 1B;
# about 30 and 50 s), then the decode/prefill table, printed last.
../../gpubin/cuda.test -test.run '^(TestGPTQ1B|TestAWQ1B|TestPerf)$' -test.timeout 540s -perf -model1b "$model" 2>&1 \
	| tee "$out/gpu-perf.log" | sed -n '/^GPTQ1B\|^AWQ1B/p; /^PERF/,$p'
grep -q '^FAIL' "$out/gpu-perf.log" && status=1
exit $status
