// paper_finetune.ts — the paper's three-way comparison at small scale (section 5 of `deno task
// paper`): QLoRA (NF4 + double quantization base, LoRA on every linear layer) against 16-bit LoRA
// (the same LoRA on the unquantized base) and full fine-tuning (every weight of the unquantized
// base), on stories260K and one small deterministic task: templated stories whose second half
// repeats the first's names and objects. Same data, seed, steps, batch and schedule for all three;
// each method's learning rate is tuned on a dev split (the full run) and the final figure is the
// loss on a held-out validation split.
import { type Context } from "../../server/ffi/tensor.ts";
import { loadModel } from "../../server/model/loader.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { LORA_MODULES } from "../../server/model/llama.ts";
import type { TokenizedExample } from "../../server/training/dataset.ts";
import { Trainer, type TrainHyper } from "../../server/training/trainer.ts";
import type { OptimizerKindName } from "../../server/ffi/optim.ts";
import type { LlamaModel } from "../../server/model/llama.ts";
import { mulberry32 } from "../../server/util/rng.ts";

export const METHODS = ["QLoRA (NF4 + DQ)", "LoRA (32-bit base)", "full fine-tuning"] as const;
export type Method = (typeof METHODS)[number];

const NAMES = ["Lily", "Tom", "Ben", "Mia", "Sue", "Max", "Anna", "Sam"];
const THINGS = ["ball", "cat", "dog", "box", "cake", "hat", "car", "book"];
const KINDS = ["red", "blue", "green", "big", "little", "yellow"];

/** Every story of the template, shuffled with a fixed seed, cut into train / dev / validation. */
export async function storyTask(dir: string, sizes: { train: number; dev: number; val: number }) {
  const tok = await Tokenizer.load(dir);
  const all: string[] = [];
  for (const a of NAMES) {
    for (const b of NAMES) {
      if (a === b) continue;
      for (const t of THINGS) {
        for (const k of KINDS) all.push(`${a} had a ${k} ${t}. ${a} gave the ${k} ${t} to ${b}. ${b} said thank you to ${a}.`);
      }
    }
  }
  const rand = mulberry32(20230523);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  const encode = (s: string): TokenizedExample => {
    const ids = tok.encode(s, { addSpecialTokens: true });
    return { ids, weights: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  };
  const cut = (from: number, n: number) => all.slice(from, from + n).map(encode);
  return {
    sample: all[0],
    train: cut(0, sizes.train),
    dev: cut(sizes.train, sizes.dev),
    val: cut(sizes.train + sizes.dev, sizes.val),
  };
}

export interface RunResult {
  method: Method;
  lr: number;
  /** Training loss per step. */
  train: number[];
  /** [step, validation loss] at step 0 and every evalEvery steps. */
  val: [number, number][];
  dev: number;
  finalVal: number;
  seconds: number;
  parameters: number;
  /** FNV-1a of the trained tensors' bytes after the last step (LoRA A/B, or every base weight). */
  weightsHash: string;
  /** The optimizer's state bytes and peak resident state bytes. */
  optimizerState: { total: number; peakResident: number };
}

export function hyper(
  steps: number,
  trainSize: number,
  lr: number,
  full: boolean,
  optimizer: OptimizerKindName = "adamw",
  budget = 0,
): TrainHyper {
  const batchSize = 8;
  return {
    nEpochs: Math.ceil((steps * batchSize) / trainSize),
    batchSize,
    learningRate: lr,
    loraR: 8,
    loraAlpha: 16,
    loraDropout: 0,
    targetModules: [...LORA_MODULES],
    useRslora: false,
    warmupRatio: 0.1,
    lrScheduler: "cosine",
    maxGradNorm: 1,
    gradientAccumulationSteps: 1,
    maxSeqLen: 64,
    packing: true,
    weightDecay: 0,
    optimizer,
    optimizerBudgetBytes: budget,
    seed: 42,
    checkpointEvery: 0,
    evalEvery: 0,
    computeDtype: "f32",
    gradientCheckpointing: false,
    trainable: full ? "full" : "lora",
  };
}

/** The parameters a trainer with these hyperparameters trains. */
function parameters(ctx: Context, model: LlamaModel, h: TrainHyper): number {
  const t = new Trainer(ctx, model, h);
  try {
    return t.numParameters;
  } finally {
    t.dispose();
  }
}

/** One method, one learning rate, from a fresh load of the base. */
export async function runMethod(
  ctx: Context,
  dir: string,
  method: Method,
  lr: number,
  data: Awaited<ReturnType<typeof storyTask>>,
  steps: number,
  evalEvery: number,
  paging: { optimizer: OptimizerKindName; budgetFraction: number; spillDir: string } | null = null,
): Promise<RunResult> {
  const quant = method === METHODS[0] ? "nf4" : "none";
  const { model } = await loadModel(ctx, dir, { quant, doubleQuant: true, blocksize: 64, embedDtype: "f32", activations: "f32" });
  const h0 = hyper(steps, data.train.length, lr, method === METHODS[2]);
  // paging: the budget as a fraction of the state this run's optimizer holds (2 f32 per parameter)
  const h = paging
    ? { ...h0, optimizer: paging.optimizer, optimizerBudgetBytes: Math.floor(parameters(ctx, model, h0) * 8 * paging.budgetFraction) }
    : h0;
  const trainer = new Trainer(ctx, model, h, paging?.spillDir ?? null);
  try {
    // the epochs cover at least `steps` steps; the schedule is over all of them, so cut the data to fit exactly
    const train = data.train.slice(0, Math.min(data.train.length, (steps * h.batchSize) / h.nEpochs));
    const r: RunResult = {
      method,
      lr,
      train: [],
      val: [[0, trainer.evaluate(data.val).loss]],
      dev: NaN,
      finalVal: NaN,
      seconds: 0,
      parameters: trainer.numParameters,
      weightsHash: "",
      optimizerState: { total: 0, peakResident: 0 },
    };
    // validation every evalEvery steps, timed apart so that `seconds` is training alone
    const t0 = performance.now();
    let evalMs = 0;
    await trainer.run(train, null, {
      onStep: (e) => {
        r.train.push(e.loss);
        if (e.step % evalEvery === 0) {
          const t = performance.now();
          r.val.push([e.step, trainer.evaluate(data.val).loss]);
          evalMs += performance.now() - t;
        }
      },
    });
    r.seconds = (performance.now() - t0 - evalMs) / 1000;
    r.finalVal = trainer.evaluate(data.val).loss;
    r.dev = trainer.evaluate(data.dev).loss;
    const tensors = trainer.full ? trainer.full.tensors.map((t) => t.param) : trainer.lora.pairs.flatMap((p) => [p.A, p.B]);
    let hash = 0x811c9dc5;
    for (const t of tensors) {
      for (const byte of new Uint8Array(t.readF32().buffer)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
    }
    r.weightsHash = hash.toString(16).padStart(8, "0");
    const mem = trainer.optimizer.memory();
    r.optimizerState = { total: mem.total, peakResident: mem.peakResident };
    return r;
  } finally {
    trainer.dispose();
    model.dispose();
  }
}
