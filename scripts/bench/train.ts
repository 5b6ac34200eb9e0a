// train.ts — suite `train` of `deno task bench`: QLoRA training tokens/s on the configuration of
// ../shared/peers/torch_lora.py (hidden 512, 8 heads, intermediate 1376, 4 layers, seq 256,
// batch 4, LoRA r 16 alpha 32 on all seven linear layers, AdamW) with our base in NF4, against
// PyTorch (Debian's python3-torch 1.13, installed here if missing) in bf16 autocast and fp32,
// measured in the same run; the peak resident memory of the training job; and a paged-AdamW
// run under an optimizer-state budget, whose resident state must stay under it; tokens/s against
// the bf16 GEMM bound (the config's FLOPs per token at oneDNN's bf16 GEMM rate, measured in the
// same run); and a DPO step's tokens/s against the supervised step's on the same tokens.
//
// Our side runs in a child process (this file with --child) so that its peak RSS (VmHWM) is the
// job's own. The model is a random Llama of that shape (bf16 weights, the byte-level tokenizer of
// scripts/make_model.ts: vocab 576, so the embedding and lm_head add ~2% to our work; the torch
// script by default runs the blocks only). Steps as in the torch script: 2 warmup, 8 timed, median.
import type { Row } from "./main.ts";
import { torchLora } from "./peers.ts";
import { makeModel, SHAPES } from "../../server/model/make_model.ts";
import { Context, DType } from "../../server/ffi/tensor.ts";
import * as ops from "../../server/ffi/ops.ts";
import { openModel } from "../../server/model/bundle.ts";
import { LORA_MODULES } from "../../server/model/llama.ts";
import type { TokenizedExample, TokenizedPair } from "../../server/training/dataset.ts";
import { Trainer, type TrainHyper } from "../../server/training/trainer.ts";
import type { OptimizerKindName } from "../../server/ffi/optim.ts";

const THREADS = 2, SEQ = 256, BATCH = 4, WARMUP = 2, STEPS = 8;
const WORK = "/tmp/qlora-bench-train";
const MODEL = `${WORK}/model-h512-l4`;

SHAPES["bench-train"] = {
  hiddenSize: 512,
  intermediateSize: 1376,
  numLayers: 4,
  numHeads: 8,
  numKvHeads: 8,
  vocabSize: null,
  maxPositionEmbeddings: 512,
  tieWordEmbeddings: false,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
};

interface ChildOptions {
  optimizer: OptimizerKindName;
  budget: number;
  steps: number;
  /** DPO: the same sequences, paired (a step is BATCH / 2 pairs, so the same tokens as a supervised step). */
  dpo?: boolean;
}

interface ChildResult {
  tokensPerSecond: number;
  stepMs: number[];
  peakRssBytes: number;
  optimizer: { total: number; resident: number; peakResident: number };
  largestTensorStateBytes: number;
  loraParameters: number;
}

function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : Deno.memoryUsage().rss;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function child(o: ChildOptions): Promise<ChildResult> {
  const ctx = new Context({ threads: THREADS });
  const bundle = await openModel(ctx, MODEL, { quant: "nf4" });
  const model = bundle.loaded.model;
  const h: TrainHyper = {
    nEpochs: 1,
    batchSize: o.dpo ? BATCH / 2 : BATCH,
    method: o.dpo ? "dpo" : "supervised",
    learningRate: 1e-4,
    loraR: 16,
    loraAlpha: 32,
    loraDropout: 0,
    targetModules: [...LORA_MODULES],
    useRslora: false,
    warmupRatio: 0,
    lrScheduler: "constant",
    maxGradNorm: 1,
    gradientAccumulationSteps: 1,
    maxSeqLen: SEQ,
    // a step's BATCH sequences in one micro-batch of BATCH × SEQ tokens, as the torch script runs them
    packing: true,
    microBatchTokens: BATCH * SEQ,
    weightDecay: 0,
    optimizer: o.optimizer,
    optimizerBudgetBytes: o.budget,
    seed: 0,
    checkpointEvery: 0,
    evalEvery: 0,
    // like the PyTorch script: bf16 compute, every activation kept (no recomputation)
    computeDtype: "bf16",
    gradientCheckpointing: false,
  };
  let s = 12345;
  const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
  const vocab = model.shape.vocab;
  const examples: TokenizedExample[] = Array.from({ length: (WARMUP + o.steps) * BATCH }, () => {
    const ids = Array.from({ length: SEQ }, () => Math.floor(rand() * vocab));
    return { ids, weights: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
  await Deno.mkdir(`${WORK}/spill`, { recursive: true });
  const items: (TokenizedExample | TokenizedPair)[] = o.dpo
    ? Array.from({ length: examples.length / 2 }, (_, i) => ({ chosen: examples[2 * i], rejected: examples[2 * i + 1] }))
    : examples;
  const trainer = new Trainer(ctx, model, h, `${WORK}/spill`);
  const ms: number[] = [];
  await trainer.run(items, null, { onStep: (e) => void ms.push((BATCH * SEQ) / e.tokensPerSecond * 1000) });
  const timed = ms.slice(WARMUP);
  const sizes = trainer.optimizer.sizes;
  const result: ChildResult = {
    tokensPerSecond: (BATCH * SEQ) / (median(timed) / 1000),
    stepMs: timed.map((x) => Math.round(x * 10) / 10),
    peakRssBytes: peakRss(),
    optimizer: trainer.optimizer.memory(),
    largestTensorStateBytes: Math.max(...sizes) * 8,
    loraParameters: trainer.lora.numParameters,
  };
  trainer.dispose();
  model.dispose();
  ctx.dispose();
  return result;
}

async function runChild(o: ChildOptions): Promise<ChildResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(import.meta.url).pathname, "--child", JSON.stringify(o)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) throw new Error(`training child exited ${out.code}: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
  const line = text.trim().split("\n").pop()!;
  return JSON.parse(line) as ChildResult;
}

/** The config's training FLOPs per token (LoRA on a frozen base, every activation kept):
 * forward 2·N and input-gradient 2·N per frozen linear parameter (no weight gradients), causal
 * attention (QKᵀ and PV: 2·2·ctx·hidden per layer forward, twice that backward, ctx = SEQ / 2 on
 * average), LoRA (2·r·(in + out) per module forward, three times that backward), lm_head
 * (2·vocab·hidden forward and input gradient). */
function flopsPerToken(hidden: number, inter: number, layers: number, vocab: number, r: number): number {
  const linear = layers * (4 * hidden * hidden + 3 * hidden * inter);
  const attention = layers * 2 * 2 * (SEQ / 2) * hidden * 3;
  const lora = layers * (4 * 2 * r * (hidden + hidden) + 3 * 2 * r * (hidden + inter)) * 4;
  return 4 * linear + attention + lora + 4 * vocab * hidden;
}

/** oneDNN's bf16 GEMM rate on this machine now, in FLOP/s: the largest product of a training step
 * (the MLP's BATCH·SEQ × hidden → intermediate), best of 5. */
function bf16GemmRate(hidden: number, inter: number): number {
  const ctx = new Context({ threads: THREADS });
  const m = BATCH * SEQ;
  const a = ctx.alloc(m * hidden * 2), b = ctx.alloc(inter * hidden * 2), c = ctx.alloc(m * inter * 2);
  let best = Infinity;
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    ops.gemm(ctx, { c, cType: DType.BF16, a, aType: DType.BF16, b, bType: DType.BF16, m, n: inter, k: hidden, transB: true });
    if (i > 0) best = Math.min(best, performance.now() - t0);
  }
  for (const x of [a, b, c]) x.dispose();
  ctx.dispose();
  return (2 * m * hidden * inter) / (best / 1000);
}

async function ensureTorch(): Promise<void> {
  const has = await new Deno.Command("/usr/bin/python3", { args: ["-c", "import torch"], stdout: "null", stderr: "null" }).output().catch(
    () => null,
  );
  if (has?.code === 0) return;
  console.log("suite train: installing python3-torch (Debian's 1.13) for the PyTorch reference…");
  const r = await new Deno.Command("apt-get", { args: ["install", "-y", "python3-torch"], stdout: "null", stderr: "piped" }).output();
  if (r.code !== 0) throw new Error(`apt-get install -y python3-torch failed: ${new TextDecoder().decode(r.stderr).slice(-1000)}`);
}

export async function run(): Promise<Row[]> {
  try {
    await Deno.stat(`${MODEL}/config.json`);
  } catch {
    await makeModel({ shape: "bench-train", out: MODEL, seed: 0, dtype: "bf16" });
  }
  // ours before and after the PyTorch runs, so that load from elsewhere on the machine weighs on
  // both sides alike; the figure is the median of all timed steps
  const first = await runChild({ optimizer: "adamw", budget: 0, steps: STEPS });
  // the paged optimizer with a budget of a quarter of its state
  const state = first.optimizer.total;
  const budget = Math.floor(state / 4);
  const paged = await runChild({ optimizer: "paged_adamw", budget, steps: 4 });
  await ensureTorch();
  const bf16 = await torchLora("bf16", THREADS);
  const fp32 = await torchLora("fp32", THREADS);
  const second = await runChild({ optimizer: "adamw", budget: 0, steps: STEPS });
  const dpo = await runChild({ optimizer: "adamw", budget: 0, steps: STEPS, dpo: true });
  const shape = SHAPES["bench-train"];
  const vocab = JSON.parse(await Deno.readTextFile(`${MODEL}/config.json`)).vocab_size;
  const flops = flopsPerToken(shape.hiddenSize, shape.intermediateSize, shape.numLayers, vocab, 16);
  const gemmRate = bf16GemmRate(shape.hiddenSize, shape.intermediateSize);
  const allMs = [...first.stepMs, ...second.stepMs];
  const ours = (BATCH * SEQ) / (median(allMs) / 1000);
  const peakRss = Math.max(first.peakRssBytes, second.peakRssBytes);
  const MiB = 1024 * 1024;
  const inFlight = paged.largestTensorStateBytes;
  console.log(
    `suite train: ours ${ours.toFixed(0)} tok/s (step ms ${allMs.join(" ")}), torch bf16 ${bf16.toFixed(0)}, fp32 ${fp32.toFixed(0)}; ` +
      `LoRA params ${first.loraParameters}; optimizer state ${state} B; paged: budget ${budget} B, peak resident ${paged.optimizer.peakResident} B ` +
      `(largest tensor's state ${inFlight} B, paged in for its step), peak RSS ${(paged.peakRssBytes / MiB).toFixed(1)} MiB`,
  );
  return [
    { name: "train tok/s NF4 r16 vs torch bf16", ours, reference: bf16, ratio: ours / bf16, target: ">= 1.50", unit: "tokens/s" },
    { name: "train tok/s NF4 r16 vs torch fp32", ours, reference: fp32, ratio: ours / fp32, target: null, unit: "tokens/s" },
    {
      name: `train tok/s vs bf16 GEMM bound (${(flops / 1e6).toFixed(1)} MFLOP/token at ${(gemmRate / 1e9).toFixed(0)} GFLOP/s)`,
      ours,
      reference: gemmRate / flops,
      ratio: ours / (gemmRate / flops),
      target: ">= 0.80",
      unit: "tokens/s",
    },
    {
      name: "DPO step tok/s vs supervised step (same tokens; + reference forward)",
      ours: dpo.tokensPerSecond,
      reference: ours,
      ratio: dpo.tokensPerSecond / ours,
      target: null,
      unit: "tokens/s",
    },
    { name: "training job peak RSS (adamw)", ours: peakRss / MiB, reference: null, ratio: null, target: null, unit: "MiB" },
    {
      name: "training job peak RSS (paged_adamw, budget 1/4)",
      ours: paged.peakRssBytes / MiB,
      reference: null,
      ratio: null,
      target: null,
      unit: "MiB",
    },
    {
      name: "paged_adamw resident state peak vs budget",
      ours: paged.optimizer.peakResident / MiB,
      reference: budget / MiB,
      ratio: paged.optimizer.peakResident / budget,
      // the native optimizer pins state up to the budget and pages one spilled tensor in per step
      target: `<= ${((budget + inFlight) / budget).toFixed(3)} (budget + 1 tensor)`,
      unit: "MiB",
    },
  ];
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--child");
  if (i >= 0) {
    console.log(JSON.stringify(await child(JSON.parse(Deno.args[i + 1]))));
  } else {
    const { formatTable } = await import("./main.ts");
    console.log(formatTable((await run()).map((r) => ({ suite: "train", ...r }))));
  }
}
