// paper.ts — `deno task paper [--quick] [--out docs/paper.md]`: the QLoRA paper's claims (Dettmers
// et al. 2023) beside our implementation's figures, measured here, seeded, written as Markdown:
//   1. 4-bit quantization error of NF4, FP4 and INT4 on normal data and on a real model's weights
//      (stories260K), across blocksizes: NF4 is the best of the three on normal data;
//   2. bits per parameter with and without double quantization (4.127 vs 4.5 at blocksize 64);
//   3. the quantized stories260K against the 32-bit one: KL divergence and top-1 agreement of the
//      next-token distributions per quant type (teacher-forced on llama2.c's reference text);
//   4. the memory planner beside the paper's Guanaco table.
// Not yet here (the report says so): QLoRA against 16-bit LoRA and full fine-tuning (needs full
// fine-tuning of a 16/32-bit base), paged AdamW under a budget (see `deno task bench train`), plots.
import { parseArgs } from "node:util";
import { Context } from "../server/ffi/tensor.ts";
import { dequantize4bit, dequantizeAbsmax8bit, quantize4bit, quantizeAbsmax8bit } from "../server/ffi/quant.ts";
import { SafetensorsModel } from "../server/model/safetensors.ts";
import { loadModel, moduleWeightName } from "../server/model/loader.ts";
import { LORA_MODULES } from "../server/model/llama.ts";
import { PAPER_MEMORY_GB, PLAN_PAPER_SETTINGS, planMemory, quantizedBytes, shapePlanModel } from "../server/serving/memory_plan.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { quick: { type: "boolean" }, out: { type: "string", default: "docs/paper.md" } },
});
const STORIES = new URL("../tests/fixtures/models/stories260K", import.meta.url).pathname;
const REFERENCE = JSON.parse(Deno.readTextFileSync(`${STORIES}/reference_greedy.json`)) as {
  cases: { prompt_ids: number[]; generated_ids: number[] }[];
};
const QUANTS = ["nf4", "fp4", "int4"] as const;
const BLOCKSIZES = [64, 128, 256, 512, 1024];
const ctx = new Context({ threads: 0 });
const lines: string[] = [];
const say = (s = "") => lines.push(s);

/** Seeded N(0, 1) samples (xorshift + Box-Muller). */
function normal(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u())), t = 2 * Math.PI * u();
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

/** Root-mean-square error of x after a 4-bit round trip (optionally with double-quantized scales). */
function rmse(x: Float32Array, blocksize: number, quant: (typeof QUANTS)[number], doubleQuant = false): number {
  const q = quantize4bit(ctx, x, blocksize, quant);
  if (doubleQuant) q.absmax = dequantizeAbsmax8bit(ctx, quantizeAbsmax8bit(ctx, q.absmax));
  const y = dequantize4bit(ctx, q, x.length, blocksize, quant);
  let e = 0, ss = 0;
  for (let i = 0; i < x.length; i++) {
    e += (x[i] - y[i]) ** 2;
    ss += x[i] ** 2;
  }
  return Math.sqrt(e / ss); // relative to the data's RMS
}

// 1. quantization error
const n = values.quick ? 1 << 18 : 1 << 22;
const gauss = normal(n, 20230523);
const st = await SafetensorsModel.open(STORIES);
const parts: Float32Array[] = [];
for (let l = 0; l < 5; l++) {
  for (const m of LORA_MODULES) {
    const name = `${moduleWeightName(l, m)}.weight`;
    if (st.has(name)) parts.push(await st.readF32(name));
  }
}
const real = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
parts.reduce((o, p) => (real.set(p, o), o + p.length), 0);
say("# The QLoRA paper, reproduced (small scale)");
say();
say(
  `Written by \`deno task paper${values.quick ? " --quick" : ""}\` on ${
    new Date().toISOString().slice(0, 10)
  } (${ctx.backend} backend). Seeded; the`,
);
say("figures are this implementation's (native/, the kernels the server uses), next to the paper's claims.");
say();
say("## 1. 4-bit data types: NF4 against FP4 and INT4");
say();
say("Claim (section 3): NF4 is information-theoretically optimal for normally distributed weights and gives lower");
say("quantization error than FP4 and INT4. Our figure: the relative RMS error ‖x − deq(q(x))‖ / ‖x‖ after a round trip,");
say(`on ${n.toLocaleString("en")} N(0, 1) samples and on the ${real.length.toLocaleString("en")} linear-layer weights of stories260K,`);
say("per blocksize (absmax scaling per block, as bitsandbytes):");
say();
say("| data | blocksize | NF4 | FP4 | INT4 | NF4 + double quant |");
say("|---|---|---|---|---|---|");
const best: Record<string, number> = {};
for (const [label, x] of [["N(0,1)", gauss], ["stories260K", real]] as const) {
  for (const bs of BLOCKSIZES) {
    const e = QUANTS.map((q) => rmse(x, bs, q));
    const dq = rmse(x, bs, "nf4", true);
    if (bs === 64) best[label] = e[0] / Math.min(e[1], e[2]);
    say(`| ${label} | ${bs} | ${e[0].toFixed(4)} | ${e[1].toFixed(4)} | ${e[2].toFixed(4)} | ${dq.toFixed(4)} |`);
  }
}
say();
say(
  `At blocksize 64 NF4's error is ${(best["N(0,1)"] * 100).toFixed(0)}% of the better of FP4 and INT4 on normal data and ${
    (best["stories260K"] * 100).toFixed(0)
  }% on stories260K's weights;`,
);
say("double quantization of the scales adds almost nothing to the error.");
say();

// 2. bits per parameter
say("## 2. Double quantization: bits per parameter");
say();
say("Claim (section 3): double quantization saves 0.373 bits per parameter at blocksize 64 (4.127 instead of 4.5).");
say("Our figure: the bytes the native library allocates for a 4096 × 4096 weight (codes + constants), per parameter:");
say();
say("| blocksize | without double quant | with double quant (nested 256) | saved |");
say("|---|---|---|---|");
for (const bs of BLOCKSIZES) {
  const N = 4096 * 4096;
  const a = quantizedBytes(N, bs, false), b = quantizedBytes(N, bs, true);
  const bitsA = ((a.packed + a.constants) * 8) / N, bitsB = ((b.packed + b.constants) * 8) / N;
  say(`| ${bs} | ${bitsA.toFixed(3)} | ${bitsB.toFixed(3)} | ${(bitsA - bitsB).toFixed(3)} |`);
}
say();

// 3. the quantized model against the 32-bit one
say("## 3. The quantized model against the 32-bit one");
say();
say("Claim (sections 3-4): NF4 keeps the model closest to its 16-bit self. Our figure: stories260K teacher-forced on llama2.c's");
say("reference text, next-token distributions of each 4-bit model against the 32-bit one (mean KL divergence, nats; top-1 agreement):");
say();
const sequence = [
  ...REFERENCE.cases[0].prompt_ids,
  ...REFERENCE.cases[0].generated_ids,
  ...REFERENCE.cases[1].prompt_ids.slice(1),
  ...REFERENCE.cases[1].generated_ids,
];
const logSoftmax = (x: Float32Array) => {
  let m = -Infinity, s = 0;
  for (const v of x) m = Math.max(m, v);
  for (const v of x) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(x, (v) => v - lse);
};
async function positions(quant: "none" | (typeof QUANTS)[number]): Promise<Float64Array[]> {
  const { model } = await loadModel(ctx, STORIES, { quant, embedDtype: "f32", activations: "f32" });
  const B = 16, nb = Math.ceil(sequence.length / B) + 1, cache = model.newKvCache(nb, B);
  const rows: Float64Array[] = [];
  try {
    for (let i = 0; i < sequence.length; i++) {
      const logits = model.forward({
        tokens: Int32Array.of(sequence[i]),
        positions: Int32Array.of(i),
        slots: Int32Array.of(i),
        paged: {
          blockTables: Int32Array.from({ length: nb }, (_, b) => b),
          qStart: Int32Array.of(0, 1),
          ctxLens: Int32Array.of(i + 1),
          S: 1,
          maxBlocks: nb,
        },
        logitRows: Int32Array.of(0),
      }, cache);
      rows.push(logSoftmax(logits));
    }
  } finally {
    cache.dispose();
    model.dispose();
  }
  return rows;
}
const base = await positions("none");
const argmax = (x: Float64Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
say("| type | mean KL (nats) | top-1 agreement |");
say("|---|---|---|");
for (const q of QUANTS) {
  const rows = await positions(q);
  let kl = 0, agree = 0;
  for (let i = 0; i < rows.length; i++) {
    for (let v = 0; v < rows[i].length; v++) kl += Math.exp(base[i][v]) * (base[i][v] - rows[i][v]);
    if (argmax(base[i]) === argmax(rows[i])) agree++;
  }
  say(`| ${q.toUpperCase()} | ${(kl / rows.length).toFixed(4)} | ${((100 * agree) / rows.length).toFixed(1)}% |`);
}
say();
say(`(${base.length} positions; stories260K is tiny, so 4 bits cost it more than they cost a 7B model.)`);
say();

// 4. memory
say("## 4. Memory: the planner beside the paper's table");
say();
say("Claim (table in section 5, Guanaco): 7B 5 GB, 13B 10 GB, 33B 21 GB, 65B 41 GB. Our figure: `deno task plan --paper`, the");
say("planner (server/serving/memory_plan.ts, checked against measured peaks) under our reading of the paper's settings: NF4 with");
say("double quantization, 16-bit embeddings and head, one 2,048-token 16-bit KV cache, ~0.5 GB of CUDA context.");
say();
say("| model | paper | planned | planned / paper |");
say("|---|---|---|---|");
for (const [name, gb] of Object.entries(PAPER_MEMORY_GB)) {
  const p = planMemory(shapePlanModel(name)!, PLAN_PAPER_SETTINGS).total_bytes / 1e9;
  say(`| ${name} | ${gb} GB | ${p.toFixed(1)} GB | ${(p / gb).toFixed(2)} |`);
}
say();
say("## Not yet reproduced");
say();
say("- QLoRA (NF4 + DQ) against 16-bit LoRA and full fine-tuning on the same task: needs full fine-tuning of a 16/32-bit");
say("  base (`--quant none`), which the trainer does not do yet (it trains LoRA only).");
say("- Paged optimizers under memory spikes: `deno task bench train` measures paged AdamW's resident state under a budget");
say("  smaller than the state and its slowdown; this report does not yet copy those figures in.");
say("- Plots (PNG): the tables above are the figures; plots are to come.");

await Deno.mkdir(new URL(".", `file://${Deno.cwd()}/${values.out}`).pathname, { recursive: true });
await Deno.writeTextFile(values.out!, lines.join("\n") + "\n");
console.log(lines.join("\n"));
ctx.dispose();
