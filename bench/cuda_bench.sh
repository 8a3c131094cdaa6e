#!/usr/bin/env bash
# afo on the GPU against PyTorch + transformers on the same GPU, in one run:
# random-weight models with real configs, bf16 / 8-bit / 4-bit g64, decode
# and prefill tok/s, time to first token, peak GPU memory, and the bandwidth
# bound (bytes read per token over the copy bandwidth measured in the run).
#
#   bench/cuda_bench.sh [config-dir...]     (on the machine with the GPU)
#
# Default configs: TinyLlama-1.1B-Chat-v1.0 and Llama-3.1-8B from the shared
# fixtures. Environment: PROMPT (512), LONG_PROMPT (4096), GEN (128),
# REPEAT (5), FORMATS ("bf16 q8 q4"), PEER (1: run transformers), PEER_MODES
# ("eager,static-compile"), OUT (JSON
# lines file, default bench-cuda.jsonl; APPEND=1 adds to it), MODELS (where models are written,
# default /tmp/afo-models), AFO (the afo binary, default build-cuda/afo).
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${PROMPT:-512} LONG_PROMPT=${LONG_PROMPT:-4096} GEN=${GEN:-128} REPEAT=${REPEAT:-5}
FORMATS=${FORMATS:-"bf16 q8 q4"} PEER=${PEER:-1} OUT=${OUT:-bench-cuda.jsonl}
PEER_MODES=${PEER_MODES:-eager,static-compile} APPEND=${APPEND:-0}
MODELS=${MODELS:-/tmp/afo-models} AFO=${AFO:-build-cuda/afo}
fixtures=${AFO_SHARED_DIR:-../shared}/fixtures/configs
[ $# -gt 0 ] || set -- "$fixtures/TinyLlama-1.1B-Chat-v1.0" "$fixtures/Llama-3.1-8B"
mkdir -p "$MODELS"
[ "$APPEND" = 1 ] || : >"$OUT"
for cfg in "$@"; do
    name=$(basename "$cfg")
    base=$MODELS/$name
    [ -f "$base-bf16/config.json" ] || "$AFO" random-model --config "$cfg/config.json" --out "$base-bf16" --dtype bfloat16
    for fmt in $FORMATS; do
        dir=$base-$fmt
        case $fmt in
        q8) [ -f "$dir/config.json" ] || "$AFO" convert --model "$base-bf16" --out "$dir" -q --q-bits 8 --q-group-size 64 ;;
        q4) [ -f "$dir/config.json" ] || "$AFO" convert --model "$base-bf16" --out "$dir" -q --q-bits 4 --q-group-size 64 ;;
        esac
        # process start to first token, file caches warm: the wall time of a
        # whole run that loads the model and decodes a 4-token prompt plus one
        # token (random models have no tokenizer, so `afo bench`, not generate)
        start=$(date +%s.%N)
        "$AFO" bench --device cuda --model "$dir" --prompt-tokens 4 --gen-tokens 2 --repeat 1 >/dev/null 2>&1
        first=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
        "$AFO" bench --device cuda --model "$dir" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --repeat "$REPEAT" --json |
            sed "s/^\[{/[{\"format\":\"$fmt\",\"config\":\"$name\",\"process_to_first_token_s\":$first,/" >>"$OUT"
        if [ "$fmt" = bf16 ]; then
            "$AFO" bench --device cuda --model "$dir" --prompt-tokens "$LONG_PROMPT" --gen-tokens 2 --repeat 3 --json |
                sed "s/^\[{/[{\"format\":\"bf16-long\",\"config\":\"$name\",/" >>"$OUT"
        fi
    done
    if [ "$PEER" = 1 ]; then
        python3 bench/peer/transformers_bench.py --config "$cfg/config.json" --prompt-tokens "$PROMPT" \
            --gen-tokens "$GEN" --repeat "$REPEAT" --prefill-only "$LONG_PROMPT" --modes "$PEER_MODES" --json |
            sed "s/^{/{\"config\":\"$name\",/" >>"$OUT"
    fi
done
python3 bench/cuda_report.py "$OUT"
