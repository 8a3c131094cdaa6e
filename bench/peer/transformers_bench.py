#!/usr/bin/env python3
"""The GPU peer: PyTorch + transformers on a random-weight model built from a
Hugging Face config.json, measured as `afo bench` measures afo (a prompt of
random ids, greedy decoding with EOS ignored, medians of several runs).

  transformers_bench.py --config DIR/config.json [--prompt-tokens 512]
      [--gen-tokens 128] [--repeat 5] [--modes eager,static-compile] [--json]

Modes: eager = the default (dynamic) cache, eager attention kernels as the
config selects them by default (sdpa); static-compile = a static cache and
torch.compile of the forward pass (transformers' documented fast path).
Decode tok/s = gen / (t(prompt + gen + 1 new tokens) - t(prompt + 1 new
token)), so prefill and the first token are not counted. Also measures the
device's copy bandwidth in the same run (the bandwidth bound's denominator).
Exits 0 with a message when torch, transformers or a GPU is missing."""
import argparse, json, statistics, sys, time

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", default="eager,static-compile")
    ap.add_argument("--prefill-only", type=int, default=0, help="also time prefill of this many tokens")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        import torch, transformers
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as e:
        print(f"peer: skipped: {e}")
        return 0
    if not torch.cuda.is_available():
        print("peer: skipped: no CUDA GPU")
        return 0
    dev = torch.device("cuda")
    bw = copy_bandwidth(torch)
    cfg = AutoConfig.from_pretrained(a.config)
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, a.prompt_tokens), generator=g).to(dev)
    results = []
    for mode in a.modes.split(","):
        try:
            results.append(run_mode(torch, model, ids, a, mode))
        except Exception as e:  # a mode that fails here is reported, not fatal
            results.append({"mode": mode, "error": f"{type(e).__name__}: {e}"[:300]})
    for plen in ([a.prefill_only] if a.prefill_only else []):
        pid = torch.randint(0, cfg.vocab_size, (1, plen), generator=g).to(dev)
        results.append({"mode": "prefill", "prompt_tokens": plen,
                        "prefill_tok_s": prefill_rate(torch, model, pid, a.repeat)})
    out = {"peer": "transformers", "transformers": transformers.__version__, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0), "config": a.config, "copy_bandwidth_gbs": bw,
           "params": sum(p.numel() for p in model.parameters()), "results": results}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{out['gpu']}: copy bandwidth {bw:.0f} GB/s, transformers {out['transformers']}, torch {out['torch']}")
        for r in results:
            print(r)
    return 0

def copy_bandwidth(torch):
    """Device-to-device copy of 1 GiB: bytes read + written per second, median of 10."""
    n = 1 << 28
    src = torch.empty(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for i in range(12):
        torch.cuda.synchronize(); t = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    return 2 * 4 * n / statistics.median(times[2:]) / 1e9

def prefill_rate(torch, model, ids, repeat):
    rates = []
    with torch.no_grad():
        for i in range(repeat + 1):
            torch.cuda.synchronize(); t = time.perf_counter()
            model(ids, use_cache=False, logits_to_keep=1)
            torch.cuda.synchronize(); dt = time.perf_counter() - t
            if i: rates.append(ids.shape[1] / dt)
    return summary(rates)

def summary(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}

def run_mode(torch, model, ids, a, mode):
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if mode == "static-compile":
        # generate compiles the forward pass itself once the cache is a
        # static one (transformers >= 4.48: fullgraph, CUDA graphs); wrapping
        # model.forward in torch.compile as well made its graphs overwrite
        # outputs generate still held
        kw["cache_implementation"] = "static"
    def gen(n):
        torch.cuda.synchronize(); t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        torch.cuda.synchronize()
        assert out.shape[1] == ids.shape[1] + n
        return time.perf_counter() - t
    torch.cuda.reset_peak_memory_stats()
    gen(a.gen_tokens + 1)  # warm-up (and compilation)
    decode, ttft = [], []
    for _ in range(a.repeat):
        t1 = gen(1)
        tn = gen(a.gen_tokens + 1)
        ttft.append(t1)
        decode.append(a.gen_tokens / (tn - t1))
    return {"mode": mode, "decode_tok_s": summary(decode), "ttft_s": summary(ttft),
            "prefill_tok_s": summary([a.prompt_tokens / t for t in ttft]),  # prompt + first token
            "peak_memory": torch.cuda.max_memory_allocated()}

if __name__ == "__main__":
    sys.exit(main())
