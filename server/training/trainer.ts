// trainer.ts — the QLoRA training loop: epochs of shuffled examples, `batchSize` examples per
// optimizer step (OpenAI's meaning) cut into micro-batches whose gradients accumulate weighted by
// their loss tokens (so a step's loss is the mean over its tokens), global gradient-norm clipping, warmup + linear/cosine/constant decay, AdamW
// (plain, paged, or paged 8-bit) on the LoRA weights (or, `trainable: "full"`, on every weight of
// a dense f32 base: full fine-tuning, which writes no checkpoints — its result is the model itself),
// periodic validation and checkpoints.
// Deterministic for a given seed. Yields to the event loop between micro-batches.
import { setImmediate } from "node:timers";
import { type Context, type DeviceBuffer, DType } from "../ffi/tensor.ts";
import * as ops from "../ffi/ops.ts";
import { Optimizer, type OptimizerKindName } from "../ffi/optim.ts";
import type { LlamaModel, LoraModule } from "../model/llama.ts";
import { LoraWeights } from "./lora.ts";
import { FullWeights } from "./full.ts";
import { mulberry32 } from "../util/rng.ts";
import { LoraTrainingModel, type Trainable } from "./model.ts";
import { lossTokenCount, makeSteps, packBatch, type TokenizedExample, type TokenizedPair } from "./dataset.ts";

/** What a job trains on: examples (supervised) or preference pairs (DPO). */
export type TrainItem = TokenizedExample | TokenizedPair;
const isPair = (x: TrainItem): x is TokenizedPair => "chosen" in x;

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
  /** At least this many micro-batches per step (a memory knob; a step is still batchSize examples). */
  gradientAccumulationSteps: number;
  maxSeqLen: number;
  /** Several examples share a micro-batch (each its own attention segment); false: one per micro-batch. */
  packing: boolean;
  /** Tokens per packed micro-batch (default 4 × maxSeqLen): bounds activation memory. */
  microBatchTokens?: number;
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
  /** Supervised cross-entropy (default), or DPO on preference pairs against the base (adapter off). */
  method?: "supervised" | "dpo";
  /** DPO's β: how far the policy may move from the reference (default 0.1). */
  dpoBeta?: number;
  /** "lora" (default): LoRA adapters on a frozen base; "full": every weight of a dense f32 base is
   * trained in place (supervised only; the lora* hyperparameters are unused; a 4-bit base is refused). */
  trainable?: Trainable;
}

/** DPO's per-step metrics, averaged over the step's pairs (TRL's rewards/*). */
export interface DpoMetrics {
  chosenReward: number;
  rejectedReward: number;
  margin: number;
  accuracy: number;
}

export interface StepEvent {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  /** Supervised: the share of the step's loss tokens whose most likely prediction is the target. */
  accuracy?: number;
  validationLoss?: number;
  validationAccuracy?: number;
  dpo?: DpoMetrics;
}

/** Validation: the loss (token-mean cross-entropy, or pair-mean DPO loss) and, supervised, the
 * token accuracy. */
export interface Evaluation {
  loss: number;
  accuracy?: number;
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

/** Optimizer steps of a run over `items` (known before a trainer exists: a job sizes its
 * checkpoint interval by it). A step is batchSize items, whatever their lengths. */
export function totalSteps(items: TrainItem[], h: Pick<TrainHyper, "batchSize" | "nEpochs">): number {
  return Math.ceil(items.length / h.batchSize) * h.nEpochs;
}

export class Trainer {
  readonly #lora: LoraWeights | null;
  /** Full fine-tuning: the base's weights (trained in place) and their gradients; else null. */
  readonly full: FullWeights | null;
  readonly optimizer: Optimizer;
  /** LoRA mode: each pair's [A, B] optimizer indices (empty in full mode). */
  readonly slots: [number, number][];
  /** Every trained tensor, its gradient and its optimizer index, in optimizer order. */
  readonly #tensors: { param: DeviceBuffer; grad: DeviceBuffer; slot: number }[];
  readonly #net: LoraTrainingModel;
  #norm: ReturnType<Context["alloc"]>;
  step = 0;

  constructor(readonly ctx: Context, readonly model: LlamaModel, readonly h: TrainHyper, spillDir: string | null = null) {
    const trainable = h.trainable ?? "lora";
    if (trainable === "full" && h.method === "dpo") {
      throw new RangeError("DPO needs a frozen reference model: it trains LoRA adapters, not the full base");
    }
    // full mode throws FullFineTuneError for a 4-bit (or bf16) base before anything is allocated
    this.full = trainable === "full" ? new FullWeights(ctx, model) : null;
    this.#lora = trainable === "lora"
      ? new LoraWeights(ctx, model, {
        r: h.loraR,
        alpha: h.loraAlpha,
        dropout: h.loraDropout,
        targetModules: h.targetModules,
        useRslora: h.useRslora,
      }, h.seed)
      : null;
    this.#net = new LoraTrainingModel(ctx, model, this.#lora ?? this.full!, {
      computeDtype: (h.computeDtype ?? "bf16") === "bf16" ? DType.BF16 : DType.F32,
      recompute: h.gradientCheckpointing ?? true,
    });
    this.optimizer = new Optimizer(ctx, h.optimizer, h.optimizerBudgetBytes, spillDir);
    this.slots = (this.#lora?.pairs ?? []).map((p) => [this.optimizer.add(p.dA.bytes / 4), this.optimizer.add(p.dB.bytes / 4)]);
    this.#tensors = this.#lora
      ? this.#lora.pairs.flatMap((p, i) => [
        { param: p.A, grad: p.dA, slot: this.slots[i][0] },
        { param: p.B, grad: p.dB, slot: this.slots[i][1] },
      ])
      : this.full!.tensors.map((t) => ({ param: t.param, grad: t.grad, slot: this.optimizer.add(t.param.bytes / 4) }));
    this.#norm = ctx.alloc(4);
  }

  /** The LoRA weights (LoRA mode; full fine-tuning has none). */
  get lora(): LoraWeights {
    if (!this.#lora) throw new RangeError("full fine-tuning trains the base's weights: there are no LoRA weights");
    return this.#lora;
  }

  get trainable(): Trainable {
    return this.#net.trainable;
  }

  /** Trained parameters: LoRA's, or the whole base's. */
  get numParameters(): number {
    return this.#lora ? this.#lora.numParameters : this.full!.numParameters;
  }

  get state(): TrainerState {
    return { step: this.step, lora: this.lora, optimizer: this.optimizer, slots: this.slots };
  }

  /** How a group of items is cut into micro-batches. */
  #steps(items: TrainItem[], batchSize: number): TrainItem[][][] {
    const h = this.h;
    const len = (ex: TokenizedExample) => Math.min(ex.ids.length, h.maxSeqLen);
    return makeSteps(items, batchSize, (x) => (isPair(x) ? len(x.chosen) + len(x.rejected) : len(x)), {
      microBatchTokens: h.packing ? (h.microBatchTokens ?? 4 * h.maxSeqLen) : 1,
      minMicroBatches: h.gradientAccumulationSteps,
    });
  }

  /** A micro-batch's packed sequences: each example, or each pair as [chosen, rejected]. */
  #pack(items: TrainItem[]) {
    return packBatch(items.flatMap((x) => (isPair(x) ? [x.chosen, x.rejected] : [x])), this.h.maxSeqLen);
  }

  /** How much of its step a micro-batch weighs: its loss tokens (supervised) or its pairs (DPO). */
  #weight(items: TrainItem[]): number {
    return items.reduce((n, x) => n + (isPair(x) ? 1 : lossTokenCount([x], this.h.maxSeqLen)), 0);
  }

  /** The optimizer steps of one epoch (each a list of micro-batches), in that epoch's seeded order. */
  epochSteps(items: TrainItem[], epoch: number): TrainItem[][][] {
    return this.#steps(shuffled(items, this.h.seed * 7919 + epoch), this.h.batchSize);
  }

  totalSteps(items: TrainItem[]): number {
    return totalSteps(items, this.h);
  }

  /** Validation loss: token-mean cross-entropy, or pair-mean DPO loss (no dropout). */
  evaluate(items: TrainItem[]): Evaluation {
    let total = 0, weight = 0, correct = 0;
    const beta = this.h.dpoBeta ?? 0.1;
    for (const mb of this.#steps(items, Math.max(1, items.length)).flat()) {
      const batch = this.#pack(mb);
      if (this.h.method === "dpo") {
        const ref = this.#net.sequenceLogprobs(batch, false), pol = this.#net.sequenceLogprobs(batch, true);
        for (let i = 0; i < ref.length; i += 2) {
          const z = beta * ((pol[i] - ref[i]) - (pol[i + 1] - ref[i + 1]));
          total += z > 0 ? Math.log1p(Math.exp(-z)) : -z + Math.log1p(Math.exp(z));
          weight++;
        }
      } else {
        const r = this.#net.evaluate(batch);
        total += r.loss * r.lossTokens;
        weight += r.lossTokens;
        correct += r.correct;
      }
    }
    const loss = weight > 0 ? total / weight : 0;
    return this.h.method === "dpo" ? { loss } : { loss, accuracy: weight > 0 ? correct / weight : 0 };
  }

  /** Runs training from this.step (0, or a restored checkpoint's step) to the end. */
  async run(train: TrainItem[], validation: TrainItem[] | null, hooks: TrainerHooks = {}): Promise<"completed" | "stopped"> {
    const h = this.h;
    if (train.some((x) => isPair(x) !== (h.method === "dpo"))) {
      throw new RangeError(h.method === "dpo" ? "DPO trains on preference pairs only" : "supervised training takes examples, not pairs");
    }
    const total = this.totalSteps(train);
    const perEpoch = total / h.nEpochs;
    for (let epoch = Math.floor(this.step / perEpoch); epoch < h.nEpochs; epoch++) {
      const steps = this.epochSteps(train, epoch);
      // skip the steps already done in this epoch (resume)
      const firstStep = epoch * perEpoch;
      for (let s = this.step - firstStep; s < perEpoch; s++) {
        const group = steps[s];
        const t0 = performance.now();
        (this.#lora ?? this.full!).zeroGrad();
        // each micro-batch's mean-loss gradient weighted by its share of the step's loss tokens
        // (supervised) or pairs (DPO), so the step's loss is the mean over all of them
        const counts = group.map((mb) => this.#weight(mb));
        const stepWeight = counts.reduce((a, b) => a + b, 0);
        let lossSum = 0, tokens = 0, correct = 0, lossTokens = 0;
        const dpo: DpoMetrics | undefined = h.method === "dpo" ? { chosenReward: 0, rejectedReward: 0, margin: 0, accuracy: 0 } : undefined;
        for (const [i, mb] of group.entries()) {
          if (hooks.shouldStop?.()) return "stopped";
          const batch = this.#pack(mb);
          this.#net.step = this.step;
          const share = stepWeight > 0 ? counts[i] / stepWeight : 1 / group.length;
          if (dpo) {
            const reference = this.#net.sequenceLogprobs(batch, false);
            const r = this.#net.dpoForwardBackward(batch, reference, h.dpoBeta ?? 0.1, share);
            lossSum += r.loss * share;
            const perPair = share / r.pairs;
            dpo.chosenReward += r.chosenReward * perPair;
            dpo.rejectedReward += r.rejectedReward * perPair;
            dpo.accuracy += r.correct * perPair;
          } else {
            const r = this.#net.forwardBackward(batch, share);
            lossSum += r.loss * share;
            correct += r.correct;
            lossTokens += r.lossTokens;
          }
          tokens += batch.tokens.length;
          await new Promise((res) => setImmediate(res));
        }
        // global gradient norm over every trained tensor
        ops.fillZero(this.ctx, this.#norm, 4);
        for (const t of this.#tensors) ops.sumSquares(this.ctx, this.#norm, t.grad, t.grad.bytes / 4);
        const gradNorm = Math.sqrt(this.#norm.readF32(0, 1)[0]);
        const clip = h.maxGradNorm > 0 && gradNorm > h.maxGradNorm ? h.maxGradNorm / (gradNorm + 1e-6) : 1;
        this.step++;
        const lr = learningRateAt(this.step, total, h);
        const hyper = { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: h.weightDecay };
        for (const t of this.#tensors) this.optimizer.step(t.slot, t.param, t.grad, hyper, clip, this.step);
        const seconds = (performance.now() - t0) / 1000;
        const event: StepEvent = {
          step: this.step,
          totalSteps: total,
          epoch,
          loss: lossSum,
          lr,
          gradNorm,
          tokensPerSecond: tokens / seconds,
        };
        if (dpo) event.dpo = { ...dpo, margin: dpo.chosenReward - dpo.rejectedReward };
        else event.accuracy = lossTokens > 0 ? correct / lossTokens : 0;
        const evalNow = validation && validation.length > 0 &&
          (h.evalEvery > 0 ? this.step % h.evalEvery === 0 : s === perEpoch - 1);
        if (evalNow) {
          const v = this.evaluate(validation!);
          event.validationLoss = v.loss;
          if (v.accuracy !== undefined) event.validationAccuracy = v.accuracy;
        }
        await hooks.onStep?.(event);
        if (this.#lora && h.checkpointEvery > 0 && this.step % h.checkpointEvery === 0 && this.step < total) {
          await hooks.onCheckpoint?.(this.step, false, this.state);
        }
      }
    }
    // full fine-tuning's result is the model itself (trained in place): no adapter checkpoint
    if (this.#lora) await hooks.onCheckpoint?.(this.step, true, this.state);
    return "completed";
  }

  dispose(): void {
    this.#net.dispose();
    this.optimizer.dispose();
    this.#lora?.dispose();
    this.full?.dispose();
    this.#norm.dispose();
  }
}
