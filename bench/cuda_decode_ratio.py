#!/usr/bin/env python3
"""The GPU decode's ratio to its bandwidth bound, the bound read next to each run.

    python3 bench/cuda_decode_ratio.py MODEL [--runs 5] [--afo build-cuda/afo]
                                       [--prompt-tokens 512] [--gen-tokens 128] [--repeat 3]

The bound is the bytes a decode step reads (`decode_step_bytes` of `afo bench
--json`) over the device's copy bandwidth, measured as the peer script does
(bench/peer/transformers_bench.py, `copy_bandwidth`). A lent H200's copy
reading drifts by 1-3% across a minute of benchmarks (4150 GB/s before,
4050 after, on the twenty-ninth session's GPUs), so a reading taken once
before or after all the runs can be a different GPU state from the runs'.
Here the copy bandwidth is read before every run and after the last, and
each run's ratio is given against the higher of its two neighbouring
readings (the strict ratio) and against their mean. Prints a table and,
last, one JSON line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
from transformers_bench import copy_bandwidth  # noqa: E402


def bound_tok_s(step_bytes, copy_gbs):
    """Tokens a second a step of step_bytes allows at copy_gbs."""
    return copy_gbs * 1e9 / step_bytes


def decode_run(a):
    cmd = [a.afo, "bench", "--device", "cuda", "--model", a.model, "--prompt-tokens", str(a.prompt_tokens),
           "--gen-tokens", str(a.gen_tokens), "--repeat", str(a.repeat), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    r = json.loads(line)[0]
    return r["decode_tok_s"]["median"], r["decode_step_bytes"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--afo", default="build-cuda/afo")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.runs < 1:
        p.error("--runs must be at least 1")
    import torch
    if not torch.cuda.is_available():
        sys.exit("cuda_decode_ratio: no CUDA device")
    readings = [copy_bandwidth(torch)]
    runs = []
    for _ in range(a.runs):
        runs.append(decode_run(a))
        readings.append(copy_bandwidth(torch))
    print("| run | decode tok/s | copy GB/s before / after | bound tok/s (higher reading) | of bound (strict) | of bound (mean reading) |")
    print("|---|---|---|---|---|---|")
    strict, mean = [], []
    for i, (tok_s, step_bytes) in enumerate(runs):
        before, after = readings[i], readings[i + 1]
        bound = bound_tok_s(step_bytes, max(before, after))
        strict.append(tok_s / bound)
        mean.append(tok_s / bound_tok_s(step_bytes, (before + after) / 2))
        print(f"| {i + 1} | {tok_s:.1f} | {before:.0f} / {after:.0f} | {bound:.0f} | {strict[-1]:.4f} | {mean[-1]:.4f} |")
    print(f"median of {a.runs}: strict {statistics.median(strict):.4f} [{min(strict):.4f}..{max(strict):.4f}],"
          f" mean reading {statistics.median(mean):.4f} [{min(mean):.4f}..{max(mean):.4f}]")
    print(json.dumps({"model": a.model, "gpu": torch.cuda.get_device_name(0), "decode_step_bytes": runs[0][1],
                      "decode_tok_s": [r[0] for r in runs], "copy_gbs": readings,
                      "ratio_strict": strict, "ratio_mean_reading": mean}))


if __name__ == "__main__":
    main()
