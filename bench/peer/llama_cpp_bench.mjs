// The peer: llama.cpp (node-llama-cpp's prebuilt CPU binaries) on a GGUF file.
//   node llama_cpp_bench.mjs --model F.gguf [--threads N] [--prompt-tokens 512] [--gen-tokens 128] [--repeat 3]
//     prefill and decode tok/s (random prompt ids, greedy, EOS ignored) as JSON
//   node llama_cpp_bench.mjs --model F.gguf --ids 1,2,3 --gen-tokens 20
//     the greedy continuation of the given ids and the top next-token probabilities after them (interop checks)
// node-llama-cpp is looked up under $AFO_PEER_DIR (default: <repo>/.peer, where install.sh puts it).
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const peerDir = process.env.AFO_PEER_DIR || path.join(here, "..", "..", ".peer");
const require = createRequire(path.join(peerDir, "package.json"));
const { getLlama, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));

const args = { threads: 2, "prompt-tokens": 512, "gen-tokens": 128, repeat: 3, seed: 1 };
for (let i = 2; i < process.argv.length; i += 2) {
    const k = process.argv[i].replace(/^--/, ""), v = process.argv[i + 1];
    if (!(k in args) && !["model", "ids"].includes(k) || v === undefined) {
        console.error(`llama_cpp_bench: unknown option or missing value: ${process.argv[i]}`);
        process.exit(2);
    }
    args[k] = ["model", "ids"].includes(k) ? v : Number(v);
}
if (!args.model) {
    console.error("llama_cpp_bench: --model F.gguf is required");
    process.exit(2);
}

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: args.threads });
const model = await llama.loadModel({ modelPath: args.model });
const nPrompt = args.ids ? args.ids.split(",").length : args["prompt-tokens"];
const context = await model.createContext({
    contextSize: nPrompt + args["gen-tokens"] + 8,
    batchSize: Math.max(nPrompt, 1),
    threads: { ideal: args.threads, min: args.threads },
});

// Greedy generation of `gen` tokens after `prompt`; the time to the first
// token is prefill (one batch) plus one sampling, the rest are decode steps.
async function run(prompt, gen) {
    const seq = context.getSequence();
    const out = [];
    const t0 = performance.now();
    let tFirst = 0;
    for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
        if (out.length === 0) tFirst = performance.now();
        out.push(tok);
        if (out.length >= gen) break;
    }
    const tEnd = performance.now();
    seq.dispose();
    return { out, prefillS: (tFirst - t0) / 1000, decodeS: (tEnd - tFirst) / 1000 };
}

if (args.ids) {
    const prompt = args.ids.split(",").map(Number);
    const { out } = await run(prompt, args["gen-tokens"]);
    const seq = context.getSequence();
    const items = prompt.map((t, i) => (i === prompt.length - 1 ? [t, { generateNext: { probabilities: true } }] : t));
    const res = await seq.controlledEvaluate(items);
    const probs = [...res[prompt.length - 1].next.probabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
    console.log(JSON.stringify({ model: args.model, greedy_ids: out, top_next: probs.map(([id, p]) => ({ id, p })) }));
} else {
    // xorshift ids over the vocabulary's ordinary range, the same every run
    let s = args.seed >>> 0 || 1;
    const vocab = model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 32000;
    const prompt = Array.from({ length: nPrompt }, () => {
        s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
        return 3 + (s % (vocab - 3));
    });
    await run(prompt.slice(0, 8), 4); // warm-up: page in the weights
    const prefill = [], decode = [];
    for (let r = 0; r < args.repeat; r++) {
        const { out, prefillS, decodeS } = await run(prompt, args["gen-tokens"]);
        prefill.push(nPrompt / prefillS);
        decode.push((out.length - 1) / decodeS);
    }
    const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
    const round = (x) => Math.round(x * 10) / 10;
    console.log(JSON.stringify({
        peer: "llama.cpp (node-llama-cpp 3.21.1)", model: path.basename(args.model), threads: args.threads,
        prompt_tokens: nPrompt, gen_tokens: args["gen-tokens"], repeat: args.repeat,
        prefill_tok_s: round(median(prefill)), decode_tok_s: round(median(decode)),
        prefill_all: prefill.map(round), decode_all: decode.map(round),
    }));
}
await context.dispose();
await model.dispose();
await llama.dispose();
