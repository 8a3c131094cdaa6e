#!/usr/bin/env python3
"""Table of bench/cuda_bench.sh's JSON lines: afo's rows per model and format
against the bandwidth bound and against transformers from the same run.

Bytes read per token: `afo bench`'s decode_step_bytes, the mean over the
decode steps of afo_model_decode_bytes (every weight once, of an untied
embedding table only the token's row, plus the keys and values attention
reads), the measure the CPU benchmarks use. Lines written before afo bench
reported it (before 2026-11-27's eighth session) get the older estimate:
the weight bytes less an untied embedding table, no KV cache, which makes
the bound about 0.5% higher at 8B bf16 and a 576-token context."""
import json, os, sys

BYTES_PER_WEIGHT = {"bf16": 2.0, "q8": 1 + 4 / 64, "q4": 0.5 + 4 / 64}

def main(path):
    afo, peer = [], {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        v = json.loads(line)
        if isinstance(v, list):
            afo.extend(v)
        elif "results" in v:  # "config" is the config.json path the peer read
            peer[os.path.basename(os.path.dirname(v["config"]))] = v
    fixtures = os.path.join(os.environ.get("AFO_SHARED_DIR", "../shared"), "fixtures", "configs")
    print("| model | format | decode tok/s | bound tok/s | of bound | × transformers eager | × static+compile "
          "| prefill tok/s | TTFT s (from process start) | peak GPU GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in afo:
        cfgname, fmt = r["config"], r["format"]
        p = peer.get(cfgname, {})
        modes = {x["mode"]: x for x in p.get("results", [])}
        if fmt == "bf16-long":
            tp = modes.get("prefill", {}).get("prefill_tok_s", {}).get("median")
            print(f"| {cfgname} | bf16, {r['prompt_tokens']}-token prompt | | | | | "
                  f"| {r['prefill_tok_s']['median']:.0f} ({ratio(r['prefill_tok_s']['median'], tp)} × transformers sdpa) | | "
                  f"{r['peak_memory'] / 1e9:.2f} |")
            continue
        per_token = r.get("decode_step_bytes")
        if not per_token:
            cfg = json.load(open(os.path.join(fixtures, cfgname, "config.json")))
            embed = cfg["vocab_size"] * cfg["hidden_size"] * BYTES_PER_WEIGHT[fmt]
            per_token = r["model_bytes"] - (0 if cfg.get("tie_word_embeddings") else embed)
        bw = p.get("copy_bandwidth_gbs")
        bound = bw * 1e9 / per_token if bw else None
        dec = r["decode_tok_s"]["median"]
        eager = modes.get("eager", {}).get("decode_tok_s", {}).get("median")
        static = modes.get("static-compile", {}).get("decode_tok_s", {}).get("median")
        peer_pf = modes.get("eager", {}).get("prefill_tok_s", {}).get("median") if fmt == "bf16" else None
        print(f"| {cfgname} | {fmt} | {dec:.1f} [{r['decode_tok_s']['min']:.1f}..{r['decode_tok_s']['max']:.1f}] "
              f"| {bound:.0f} | {dec / bound:.2f} | {ratio(dec, eager)} | {ratio(dec, static)} "
              f"| {r['prefill_tok_s']['median']:.0f}{' (' + ratio(r['prefill_tok_s']['median'], peer_pf) + ' × eager)' if peer_pf else ''} "
              f"| {r.get('process_to_first_token_s', 0):.2f} | {r['peak_memory'] / 1e9:.2f} |"
              if bound else f"| {cfgname} | {fmt} | {dec:.1f} | n/a | | | | | | |")
    for name, p in peer.items():
        print(f"\ntransformers {p['transformers']}, torch {p['torch']} on {p['gpu']}, {name}: copy bandwidth "
              f"{p['copy_bandwidth_gbs']:.0f} GB/s")
        for x in p["results"]:
            print("  ", json.dumps(x))

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-cuda.jsonl")
