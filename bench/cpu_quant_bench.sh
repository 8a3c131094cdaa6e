#!/usr/bin/env bash
# Quantized decode and prefill on the CPU against llama.cpp, in one run:
# a random-weight model with a real config in bf16, MLX 8-bit and 4-bit g64
# (afo), and the same weights as GGUF Q8_0 and Q4_0 (llama.cpp through
# node-llama-cpp; bench/peer/install.sh installs it, or it is skipped).
#
#   bench/cpu_quant_bench.sh [config-dir]    (default: TinyLlama-1.1B's)
#
# Environment: THREADS (2), PROMPT (512), GEN (64), REPEAT (3), MODELS
# (/tmp/afo-cpu-models), OUT (bench-cpu-quant.jsonl), BUILD (build),
# TOKENIZER (a directory with tokenizer.json for the GGUF files, which
# llama.cpp needs; default: the shared fixtures' llama2 = TinyLlama one). Check that the
# machine is idle first: both afo and the peer are bandwidth-bound.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2} PROMPT=${PROMPT:-512} GEN=${GEN:-64} REPEAT=${REPEAT:-3}
MODELS=${MODELS:-/tmp/afo-cpu-models} OUT=${OUT:-bench-cpu-quant.jsonl} BUILD=${BUILD:-build}
cfg=${1:-${AFO_SHARED_DIR:-../shared}/fixtures/configs/TinyLlama-1.1B-Chat-v1.0}
base=$MODELS/$(basename "$cfg")
mkdir -p "$MODELS"
: >"$OUT"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ -f "$base-bf16/config.json" ] || "$BUILD/afo" random-model --config "$cfg/config.json" --out "$base-bf16" --dtype bfloat16
TOKENIZER=${TOKENIZER:-${AFO_SHARED_DIR:-../shared}/fixtures/tokenizers/llama2}
[ -f "$base-bf16/tokenizer.json" ] || cp "$TOKENIZER"/tokenizer*.json "$TOKENIZER"/special_tokens_map.json "$base-bf16/"
for b in 8 4; do
    [ -f "$base-q$b/config.json" ] ||
        "$BUILD/afo" convert --model "$base-bf16" --out "$base-q$b" -q --q-bits $b --q-group-size 64 >/dev/null
done
for t in q8_0 q4_0; do
    [ -f "$base-$t.gguf" ] || "$BUILD/afo" convert --model "$base-bf16" --gguf "$base-$t.gguf" --gguf-type $t >/dev/null
done
for fmt in bf16 q8 q4; do
    "$BUILD/bench_decode" --model "$base-$fmt" --prompt "$PROMPT" --tokens "$GEN" --reps "$REPEAT" --threads "$THREADS" |
        tail -1 | sed "s/^{/{\"format\":\"$fmt\",/" >>"$OUT"
done
sh bench/peer/install.sh >&2
if [ -d .peer/node_modules/node-llama-cpp ]; then
    for t in q8_0 q4_0; do
        node bench/peer/llama_cpp_bench.mjs --model "$base-$t.gguf" --threads "$THREADS" --prompt-tokens "$PROMPT" \
            --gen-tokens "$GEN" --repeat "$REPEAT" | sed "s/^{/{\"format\":\"$t\",/" >>"$OUT"
    done
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$OUT" "$cfg/config.json" <<'PY'
import json, sys
# of bound: bench_decode's ratio (median and, in brackets, the extremes of
# the repetitions), each repetition's tok/s against the bytes
# a decoded token reads (weights less the untied embedding table's unread
# rows, plus the keys and values attention reads) over the bandwidth read
# during it; in parentheses the measure of the tables before 2026-11-27's
# seventh session: all the weights less the whole untied embedding table,
# no keys and values; of its pages' bound: the same against the read
# bandwidth of the model file's own pages (bench_decode's weight_pages_*)
cfg = json.load(open(sys.argv[2]))
BYTES_PER_WEIGHT = {"bf16": 2.0, "q8": 1 + 4 / 64, "q4": 0.5 + 4 / 64}
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
afo = {r["format"]: r for r in rows if "peer" not in r}
peer = {r["format"]: r for r in rows if "peer" in r}
print("| format | afo decode tok/s | of bound [min..max] (before) | of its pages' bound | afo prefill tok/s | llama.cpp | decode × llama.cpp | prefill × llama.cpp |")
print("|---|---|---|---|---|---|---|---|")
for fmt, twin in (("bf16", None), ("q8", "q8_0"), ("q4", "q4_0")):
    a = afo.get(fmt)
    if not a:
        continue
    embed = 0 if cfg.get("tie_word_embeddings") else cfg["vocab_size"] * cfg["hidden_size"] * BYTES_PER_WEIGHT[fmt]
    before = a["weight_ratio"] * (a["weight_bytes"] - embed) / a["weight_bytes"]
    p = peer.get(twin) if twin else None
    pd = f"{p['decode_tok_s']:.1f} / {p['prefill_tok_s']:.1f} ({twin})" if p else "—"
    rd = f"{a['decode_tok_s'] / p['decode_tok_s']:.2f}" if p else "—"
    rp = f"{a['prefill_tok_s'] / p['prefill_tok_s']:.2f}" if p else "—"
    spread = f" [{a['decode_ratio_min']:.2f}..{a['decode_ratio_max']:.2f}]" if "decode_ratio_min" in a else ""
    pages = f"{a['weight_pages_ratio']:.2f} ({a['weight_pages_bw_gbs']:.1f} GB/s)" if a.get("weight_pages_bw_gbs") else "—"
    print(f"| {fmt} | {a['decode_tok_s']:.1f} | {a['decode_ratio']:.2f}{spread} ({before:.2f}) | {pages} | {a['prefill_tok_s']:.1f} | {pd} | {rd} | {rp} |")
PY
