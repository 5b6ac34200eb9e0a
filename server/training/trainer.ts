// trainer.ts — the QLoRA training loop: epochs of shuffled micro-batches, gradient
// accumulation, global gradient-norm clipping, warmup + linear/cosine/constant decay, AdamW
// (plain, paged, or paged 8-bit) on the LoRA weights only, periodic validation and checkpoints.
// Deterministic for a given seed. Yields to the event loop between micro-batches.
import { setImmediate } from "node:timers";
import { type Context, DType } from "../ffi/tensor.ts";
import * as ops from "../ffi/ops.ts";
import { Optimizer, type OptimizerKindName } from "../ffi/optim.ts";
import type { LlamaModel, LoraModule } from "../model/llama.ts";
import { LoraWeights } from "./lora.ts";
import { mulberry32 } from "../util/rng.ts";
import { LoraTrainingModel } from "./model.ts";
import { makeMicroBatches, packBatch, type TokenizedExample } from "./dataset.ts";

export interface TrainHyper {
  nEpochs: number;
  batchSize: number;
  learningRate: number;
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: LoraModule[];
  useRslora: boolean;
  warmupRatio: number;
  lrScheduler: "linear" | "cosine" | "constant";
  maxGradNorm: number; // 0 disables clipping
  gradientAccumulationSteps: number;
  maxSeqLen: number;
  packing: boolean;
  weightDecay: number;
  optimizer: OptimizerKindName;
  /** Bytes of optimizer state kept resident for the paged optimizers (0 = no limit). */
  optimizerBudgetBytes: number;
  seed: number;
  checkpointEvery: number; // steps; 0 = only at the end
  evalEvery: number; // steps; 0 = at each epoch end
  /** Activations: "bf16" (default: bf16 GEMMs, half the memory) or "f32". */
  computeDtype?: "bf16" | "f32";
  /** Recompute each layer in backward instead of keeping its activations (default true). */
  gradientCheckpointing?: boolean;
}

export interface StepEvent {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  validationLoss?: number;
}

export interface TrainerHooks {
  onStep?(e: StepEvent): void | Promise<void>;
  /** Called with the step; the LoRA weights and optimizer state are current. */
  onCheckpoint?(step: number, final: boolean, state: TrainerState): void | Promise<void>;
  /** Polled between micro-batches; true stops training (cancel). */
  shouldStop?(): boolean;
}

/** What a checkpoint must keep to resume exactly. */
export interface TrainerState {
  step: number;
  lora: LoraWeights;
  optimizer: Optimizer;
  /** Index of each LoRA tensor in the optimizer: [A index, B index] per pair. */
  slots: [number, number][];
}

export function learningRateAt(step: number, total: number, h: Pick<TrainHyper, "learningRate" | "warmupRatio" | "lrScheduler">): number {
  const warmup = Math.floor(total * h.warmupRatio);
  if (step <= warmup && warmup > 0) return (h.learningRate * step) / warmup;
  if (h.lrScheduler === "constant") return h.learningRate;
  const progress = total > warmup ? (step - warmup) / (total - warmup) : 1;
  if (h.lrScheduler === "linear") return h.learningRate * Math.max(0, 1 - progress);
  return h.learningRate * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
}

/** Fisher-Yates with a seeded generator. */
function shuffled<T>(xs: T[], seed: number): T[] {
  const rand = mulberry32(seed);
  const out = xs.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

type Batching = Pick<TrainHyper, "seed" | "batchSize" | "maxSeqLen" | "packing">;

function epochBatches(examples: TokenizedExample[], epoch: number, h: Batching): TokenizedExample[][] {
  return makeMicroBatches(shuffled(examples, h.seed * 7919 + epoch), h.batchSize, h.maxSeqLen, h.packing);
}

/** Optimizer steps of a run over `examples` (known before a trainer exists: a job sizes its
 * checkpoint interval by it). */
export function totalSteps(examples: TokenizedExample[], h: Batching & Pick<TrainHyper, "gradientAccumulationSteps" | "nEpochs">): number {
  return Math.ceil(epochBatches(examples, 0, h).length / h.gradientAccumulationSteps) * h.nEpochs;
}

export class Trainer {
  readonly lora: LoraWeights;
  readonly optimizer: Optimizer;
  readonly slots: [number, number][];
  readonly #net: LoraTrainingModel;
  #norm: ReturnType<Context["alloc"]>;
  step = 0;

  constructor(readonly ctx: Context, readonly model: LlamaModel, readonly h: TrainHyper, spillDir: string | null = null) {
    this.lora = new LoraWeights(ctx, model, {
      r: h.loraR,
      alpha: h.loraAlpha,
      dropout: h.loraDropout,
      targetModules: h.targetModules,
      useRslora: h.useRslora,
    }, h.seed);
    this.#net = new LoraTrainingModel(ctx, model, this.lora, {
      computeDtype: (h.computeDtype ?? "bf16") === "bf16" ? DType.BF16 : DType.F32,
      recompute: h.gradientCheckpointing ?? true,
    });
    this.optimizer = new Optimizer(ctx, h.optimizer, h.optimizerBudgetBytes, spillDir);
    this.slots = this.lora.pairs.map((p) => [this.optimizer.add(p.dA.bytes / 4), this.optimizer.add(p.dB.bytes / 4)]);
    this.#norm = ctx.alloc(4);
  }

  get state(): TrainerState {
    return { step: this.step, lora: this.lora, optimizer: this.optimizer, slots: this.slots };
  }

  /** Micro-batches of one epoch, in the seeded order of that epoch. */
  epochBatches(examples: TokenizedExample[], epoch: number): TokenizedExample[][] {
    return epochBatches(examples, epoch, this.h);
  }

  totalSteps(examples: TokenizedExample[]): number {
    return totalSteps(examples, this.h);
  }

  evaluate(examples: TokenizedExample[]): number {
    let total = 0, weight = 0;
    for (const mb of makeMicroBatches(examples, this.h.batchSize, this.h.maxSeqLen, this.h.packing)) {
      const r = this.#net.evaluate(packBatch(mb, this.h.maxSeqLen));
      total += r.loss * r.lossTokens;
      weight += r.lossTokens;
    }
    return weight > 0 ? total / weight : 0;
  }

  /** Runs training from this.step (0, or a restored checkpoint's step) to the end. */
  async run(train: TokenizedExample[], validation: TokenizedExample[] | null, hooks: TrainerHooks = {}): Promise<"completed" | "stopped"> {
    const h = this.h;
    const total = this.totalSteps(train);
    const accum = h.gradientAccumulationSteps;
    const perEpoch = total / h.nEpochs;
    for (let epoch = Math.floor(this.step / perEpoch); epoch < h.nEpochs; epoch++) {
      const batches = this.epochBatches(train, epoch);
      // skip the micro-batches of steps already done in this epoch (resume)
      const firstStep = epoch * perEpoch;
      for (let s = this.step - firstStep; s < perEpoch; s++) {
        const group = batches.slice(s * accum, (s + 1) * accum);
        if (group.length === 0) break;
        const t0 = performance.now();
        this.lora.zeroGrad();
        let lossSum = 0, lossTokens = 0, tokens = 0;
        for (const mb of group) {
          if (hooks.shouldStop?.()) return "stopped";
          const batch = packBatch(mb, h.maxSeqLen);
          this.#net.step = this.step;
          const r = this.#net.forwardBackward(batch, 1 / group.length);
          lossSum += r.loss;
          lossTokens += r.lossTokens;
          tokens += batch.tokens.length;
          await new Promise((res) => setImmediate(res));
        }
        // global gradient norm over every LoRA tensor
        ops.fillZero(this.ctx, this.#norm, 4);
        for (const p of this.lora.pairs) {
          ops.sumSquares(this.ctx, this.#norm, p.dA, p.dA.bytes / 4);
          ops.sumSquares(this.ctx, this.#norm, p.dB, p.dB.bytes / 4);
        }
        const gradNorm = Math.sqrt(this.#norm.readF32(0, 1)[0]);
        const clip = h.maxGradNorm > 0 && gradNorm > h.maxGradNorm ? h.maxGradNorm / (gradNorm + 1e-6) : 1;
        this.step++;
        const lr = learningRateAt(this.step, total, h);
        const hyper = { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: h.weightDecay };
        this.lora.pairs.forEach((p, i) => {
          this.optimizer.step(this.slots[i][0], p.A, p.dA, hyper, clip, this.step);
          this.optimizer.step(this.slots[i][1], p.B, p.dB, hyper, clip, this.step);
        });
        const seconds = (performance.now() - t0) / 1000;
        const event: StepEvent = {
          step: this.step,
          totalSteps: total,
          epoch,
          loss: lossSum / group.length,
          lr,
          gradNorm,
          tokensPerSecond: tokens / seconds,
        };
        const evalNow = validation && validation.length > 0 &&
          (h.evalEvery > 0 ? this.step % h.evalEvery === 0 : s === perEpoch - 1);
        if (evalNow) event.validationLoss = this.evaluate(validation!);
        await hooks.onStep?.(event);
        if (h.checkpointEvery > 0 && this.step % h.checkpointEvery === 0 && this.step < total) {
          await hooks.onCheckpoint?.(this.step, false, this.state);
        }
      }
    }
    await hooks.onCheckpoint?.(this.step, true, this.state);
    return "completed";
  }

  dispose(): void {
    this.#net.dispose();
    this.optimizer.dispose();
    this.lora.dispose();
    this.#norm.dispose();
  }
}
