#!/usr/bin/env bash
# quality.sh — what each packed format costs stories260k, written to docs/QUALITY.md.
#
# Uses the binaries of `make build` (bin/qconvert, bin/qinfer); builds nothing.
#  1. corpus: text sampled from the FP32 model at temperature 1 with fixed
#     seeds (qinfer generate), several prompts, concatenated;
#  2. converts the model to every format qconvert writes (qconvert --json
#     keeps its report: bits per weight, file size, fallbacks);
#  3. runs `qinfer ppl --ref <the FP32 Hugging Face model> --json` on each;
#  4. writes the table to docs/QUALITY.md.
# Everything is deterministic: the same binaries give the same file.
#
# Environment: MODEL (default ../shared/testdata/models/stories260k),
# WORK (default build/quality), CTX (default 512), DOC (default docs/QUALITY.md),
# BIN (default bin), ONLY (a regular expression: only the formats it matches).
set -euo pipefail

main() {
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
MODEL=${MODEL:-../shared/testdata/models/stories260k}
WORK=${WORK:-build/quality}
CTX=${CTX:-512}
DOC=${DOC:-docs/QUALITY.md}
ONLY=${ONLY:-} # a regular expression: only the formats whose name matches (for trying things out)
QCONVERT=$BIN/qconvert
QINFER=$BIN/qinfer

die() { echo "quality.sh: $*" >&2; exit 1; }
for b in "$QCONVERT" "$QINFER"; do
	[ -x "$b" ] || die "$b is missing: run 'make build' first"
done
[ -d "$MODEL" ] || die "model directory $MODEL is missing"
command -v jq >/dev/null || die "jq is needed to read the JSON reports"
mkdir -p "$WORK"

# 1. The corpus: 8 prompts x 2 seeds x 500 tokens sampled at temperature 1.
PROMPTS=("Once upon a time" "One day" "Lily wanted to" "The little dog" "Tom and his mom" "In the park" "The sun was" "Sam had a big")
CORPUS=$WORK/corpus.txt
: >"$CORPUS.tmp"
seed=0
for p in "${PROMPTS[@]}"; do
	for _ in 1 2; do
		seed=$((seed + 1))
		text=$("$QINFER" generate --model "$MODEL" --prompt "$p" --max-tokens 500 --temperature 1 --seed "$seed")
		printf '%s%s\n' "$p" "$text" >>"$CORPUS.tmp"
	done
done
mv "$CORPUS.tmp" "$CORPUS"
corpus_sha=$(sha256sum "$CORPUS" | cut -c1-16)
echo "corpus: $CORPUS ($(wc -c <"$CORPUS") bytes, sha256 $corpus_sha...)" >&2

# The calibration text of GPTQ and AWQ: sampled like the corpus but from other
# prompts and seeds, so the evaluation text is held out.
CALIB=$WORK/calib.txt
: >"$CALIB.tmp"
for p in "The cat" "Mia saw" "Ben liked" "At night"; do
	seed=$((seed + 1))
	text=$("$QINFER" generate --model "$MODEL" --prompt "$p" --max-tokens 500 --temperature 1 --seed "$seed")
	printf '%s%s\n' "$p" "$text" >>"$CALIB.tmp"
done
mv "$CALIB.tmp" "$CALIB"
CAL="--calib $CALIB --calib-samples 32 --calib-len 128"

# 2. and 3. Every format: "family|name|qconvert flags".
FORMATS=(
	"float|f32|--method f32"
	"float|f16|--method f16"
	"float|bf16|--method bf16"
	"ggml|q8_0|--method q8_0"
	"ggml|q5_1|--method q5_1"
	"ggml|q5_0|--method q5_0"
	"ggml|q4_1|--method q4_1"
	"ggml|q4_0|--method q4_0"
	"ggml|iq4_nl|--method iq4_nl"
	"ggml|q6_k (all fallbacks)|--method q6_k"
	"ggml|q4_k (all fallbacks)|--method q4_k"
	"LLM.int8|int8 (per-row absmax)|--method int8"
	"bitsandbytes|nf4 b64|--method nf4 --group 64"
	"bitsandbytes|nf4 b64 double-quant|--method nf4 --group 64 --double-quant"
	"bitsandbytes|fp4 b64|--method fp4 --group 64"
	"rtn|rtn int8 g64|--method rtn --bits 8 --group 64"
	"rtn|rtn int5 g64|--method rtn --bits 5 --group 64"
	"rtn|rtn int4 g32|--method rtn --bits 4 --group 32"
	"rtn|rtn int4 g64|--method rtn --bits 4 --group 64"
	"rtn|rtn int4 per-channel|--method rtn --bits 4 --group -1"
	"rtn|rtn int3 g32|--method rtn --bits 3 --group 32"
	"rtn|rtn int3 g64|--method rtn --bits 3 --group 64"
	"rtn|rtn int2 g32|--method rtn --bits 2 --group 32"
	"rtn|rtn int2 g64|--method rtn --bits 2 --group 64"
	"gptq|gptq int4 g64|--method gptq --bits 4 --group 64 --embed-type rtn $CAL"
	"gptq|gptq int3 g64|--method gptq --bits 3 --group 64 --embed-type rtn $CAL"
	"gptq|gptq int2 g64|--method gptq --bits 2 --group 64 --embed-type rtn $CAL"
	"awq|awq int4 g64|--method awq --bits 4 --group 64 --embed-type rtn $CAL"
	"awq|awq int3 g64|--method awq --bits 3 --group 64 --embed-type rtn $CAL"
)

ROWS=$WORK/rows.tsv
: >"$ROWS"
i=0
for f in "${FORMATS[@]}"; do
	i=$((i + 1))
	IFS='|' read -r family name flags <<<"$f"
	if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then
		continue
	fi
	file=$WORK/$(printf '%02d' $i)-$(echo "$name" | tr -c 'a-zA-Z0-9_\n' '-').gguf
	echo "== $name: qconvert $flags" >&2
	# shellcheck disable=SC2086 # flags are words
	"$QCONVERT" --in "$MODEL" --out "$file" $flags --json >"$file.report.json" 2>"$file.convert.log" ||
		die "qconvert $flags failed: see $file.convert.log"
	"$QINFER" ppl --model "$file" --text "$CORPUS" --ref "$MODEL" --ctx "$CTX" --json >"$file.ppl.json" 2>"$file.ppl.log" ||
		die "qinfer ppl on $file failed: see $file.ppl.log"
	fallbacks=$(jq -r '[.tensors[] | select(.fallback != null and .fallback != "") | .type] | group_by(.) | map("\(length)× \(.[0])") | join(", ")' "$file.report.json")
	jq -r --arg family "$family" --arg name "$name" --arg fb "${fallbacks:--}" --slurpfile p "$file.ppl.json" \
		'([.tensors[] | select(.class == "linear" and (.fallback // "") == "")] | if length > 0 then (map(.bytes) | add) * 8 / (map(.params) | add) else "-" end) as $fmt |
		 [$family, $name, $fmt, .linear_bpw, .file_bpw, .file_bytes, $p[0].ppl, $p[0].kl_mean, $p[0].kl_p99, $p[0].top1_agree, $fb, $p[0].ref_ppl, $p[0].tokens, $p[0].windows] | @tsv' \
		"$file.report.json" >>"$ROWS"
done

# 4. docs/QUALITY.md
first=$(head -n1 "$ROWS")
ref_ppl=$(cut -f12 <<<"$first")
tokens=$(cut -f13 <<<"$first")
windows=$(cut -f14 <<<"$first")
tmp=$DOC.tmp
{
	cat <<EOF
# Quality of the packed formats on stories260k

What each format costs, measured as KL divergence of the next-token distributions from the FP32 model
(the Hugging Face checkpoint, run by the same runtime), with perplexity beside it.
Produced by \`make quality\` (\`scripts/quality.sh\`); do not edit by hand.

- **Model**: stories260k (karpathy's stories260K as a Hugging Face Llama: dim 64, 5 layers, FFN 172,
  vocabulary 512, tied embeddings; 260k parameters), \`$MODEL\`.
- **Corpus**: text sampled from the FP32 model by \`qinfer generate --temperature 1 --max-tokens 500\`,
  seeds 1-16 over 8 prompts, concatenated ($(wc -c <"$CORPUS") bytes, sha256 \`$corpus_sha…\`); the FP32 model's
  perplexity on it is $(printf '%.4f' "$ref_ppl").
- **Windows**: \`qinfer ppl --ctx $CTX\`, as llama.cpp's perplexity tool: $windows non-overlapping windows of
  $CTX tokens, BOS first, the second half of each scored: $tokens tokens. KL is KL(P_FP32 ‖ P_format) over
  the full vocabulary per scored token, in nats; top-1 is the share of scored tokens where both models' most
  likely token is the same.
- **Formats**: \`qconvert --method ...\`, every weight in the format (token embedding / tied output
  included, norms F32). *bpw format*: stored bits per weight of the linear tensors held in the format;
  *bpw linear*: over all linear layers (attention and MLP), fallbacks included; *bpw file*: 8 × file size /
  parameters. ggml block formats need whole blocks of 32 columns and nf4/fp4 whole absmax blocks: the MLP
  down projection has 172 columns, so it falls back as the last column says. The K-quants q4_k and q6_k
  need whole super-blocks of 256 columns, which no stories260k weight has (64 or 172 columns): like
  llama.cpp they write q5_0 / q8_0 instead (f16 for the down projection), so their rows measure those
  fallbacks, not K-quant blocks (*bpw format* —); \`convert/quant\` and \`convert/kquant_test.go\` measure
  the K-quant blocks themselves. Group 128, the usual size for GPTQ and AWQ, is not a size this model has: its
  linears have 64 or 172 columns, so g64 (one group per 64-column row, the down projection in groups of
  64) stands for it.
- **Reproduce**: \`make build && make quality\` (needs jq; a few minutes on 2 cores).

| family | format | bpw format | bpw linear | bpw file | file size | ppl | KL mean | KL p99 | top-1 | fallbacks |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|
EOF
	while IFS=$'\t' read -r family name fmt lbpw fbpw bytes ppl klm klp99 top1 fb _; do
		[ "$fmt" = - ] && fmt="—" || fmt=$(printf '%.2f' "$fmt")
		printf '| %s | %s | %s | %.2f | %.2f | %s | %.4f | %.3g | %.3g | %.2f%% | %s |\n' \
			"$family" "$name" "$fmt" "$lbpw" "$fbpw" "$(awk -v b="$bytes" 'BEGIN{printf "%.1f KiB", b/1024}')" "$ppl" "$klm" "$klp99" "$(awk -v t="$top1" 'BEGIN{printf "%.4f", 100*t}')" "$fb"
	done <"$ROWS"
	echo
	# Does KL fall as bits rise? Bits are those spent on the linear layers
	# (bpw linear, fallbacks included). Every pair where the format with more
	# bits has the larger mean KL (by more than 5%) is listed, within a
	# family of quantizers and across families.
	echo "## Ordering check"
	echo
	inversions() {
		awk -F'\t' -v same="$1" '
			{ fam[NR] = $1; name[NR] = $2; bpw[NR] = $4; kl[NR] = $8 }
			END {
				for (i = 1; i <= NR; i++) for (j = 1; j <= NR; j++)
					if ((fam[i] == fam[j]) == same && bpw[j] > bpw[i] + 0.01 && kl[j] > kl[i] * 1.05 && kl[j] > 1e-6)
						printf "- %s (%.2f bpw linear, KL %.3g) > %s (%.2f bpw linear, KL %.3g)\n", name[j], bpw[j], kl[j], name[i], bpw[i], kl[i]
			}' "$ROWS"
	}
	within=$(inversions 1)
	if [ -z "$within" ]; then
		echo "**Within each family, mean KL falls as bits rise**: no format has a larger mean KL (by more than 5%) than a format of its family with fewer bits per linear weight."
	else
		echo "**Within a family, formats with more bits per linear weight but a larger mean KL (by more than 5%)**:"
		echo
		echo "$within"
	fi
	echo
	across=$(inversions 0)
	if [ -z "$across" ]; then
		echo "Across families too, mean KL falls as bits per linear weight rise."
	else
		echo "Across families, pairs where the format with more bits per linear weight has the larger mean KL (by more than 5%) (explained below):"
		echo
		echo "$across"
	fi
	# The discussion of the numbers lives beside the script.
	if [ -f scripts/quality-notes.md ]; then
		echo
		cat scripts/quality-notes.md
	fi
} >"$tmp"
mv "$tmp" "$DOC"
echo "wrote $DOC" >&2
}

main "$@"
