// model.ts — QLoRA training forward and backward over a frozen (4-bit or dense) Llama with LoRA
// on chosen modules, or full fine-tuning of a dense f32 base. Sequences are packed into one batch
// of T rows (cu_seqlens: no attention across sequences). What is trained is the mode:
//   "lora": gradients flow only into LoRA A and B (f32), the base is frozen;
//   "full": every base weight is trained (full.ts): each linear's dW += dYᵀ·X (a gemm with a
//   transposed A), the RMSNorm weights' dw = Σ_rows dy·x·rstd (the norm backward's dweight),
//   the embeddings as a scatter-add of the first layer's input gradient, lm_head's dW =
//   dlogitsᵀ·hn; with tied embeddings the head and the lookup add into the one gradient.
//
// Activations are f32, or bf16 (computeDtype): bf16 halves activation memory and runs the
// frozen-weight products on bf16 GEMMs (with f32 accumulation); losses, softmax statistics,
// norms' rstd, LoRA weights and gradients stay f32.
// Gradient checkpointing per layer (recompute): only each layer's input is kept and the layer's
// forward runs again during backward; without it every layer keeps its activations (faster,
// more memory).
import { type Context, type DeviceBuffer, DType, dtypeSize } from "../ffi/tensor.ts";
import * as ops from "../ffi/ops.ts";
import { type LlamaModel, type LlamaShape, LORA_MODULES, type LoraModule } from "../model/llama.ts";
import { LoraWeights } from "./lora.ts";
import type { FullWeights } from "./full.ts";

export interface TrainBatch {
  tokens: Int32Array; // [T] input ids
  targets: Int32Array; // [T] next-token ids, < 0 where no loss is taken
  lossWeights?: Float32Array; // [T] per-token weight (default 1 where targets ≥ 0)
  positions: Int32Array; // [T] position inside its own sequence
  cuSeqlens: Int32Array; // [S + 1] sequence boundaries
}

export interface StepResult {
  /** Σ weight·nll / Σ weight over the batch's loss tokens. */
  loss: number;
  lossTokens: number;
  /** Σ weight over the loss tokens whose most likely next token (argmax) is the target. */
  correct: number;
}

/** One DPO micro-batch's outcome (pairs packed as sequences chosen₀, rejected₀, chosen₁, …). */
export interface DpoResult {
  /** Mean over pairs of −log σ(β·((π_c − ref_c) − (π_r − ref_r))). */
  loss: number;
  pairs: number;
  /** Σ over pairs of the implicit rewards β·(π − ref), chosen and rejected, and of chosen > rejected. */
  chosenReward: number;
  rejectedReward: number;
  correct: number;
  lossTokens: number;
}

export interface TrainingModelOptions {
  computeDtype?: DType; // F32 (default) or BF16
  recompute?: boolean; // gradient checkpointing per layer (default true)
}

const F32 = DType.F32;

/** One layer's activations [T rows]. */
type Acts = Record<string, DeviceBuffer>;

/**
 * The training workspace for T rows, in bytes per buffer: `shared` buffers (one set), one layer's
 * activations (`layer`: kept for every layer, or for one with recompute) and one layer's input
 * (`layerInput`: layers + 1 of them). One home for these sizes: the workspace allocates them and
 * the memory planner (model/memory_plan.ts) adds them up.
 */
export function trainWorkspaceLayout(
  s: LlamaShape,
  T: number,
  r: number,
  activationBytes: number,
): { shared: Record<string, number>; layer: Record<string, number>; layerInput: number } {
  const C = s.hidden, I = s.intermediate, Q = s.heads * s.headDim, KV = s.kvHeads * s.headDim;
  const f = (n: number) => n * 4; // f32 / i32
  const a = (n: number) => n * activationBytes; // activations
  return {
    shared: {
      ids: f(T),
      targets: f(T),
      weights: f(T),
      pos: f(T),
      losses: f(T),
      top1: f(T), // argmax id per row (token accuracy)
      top1v: f(T),
      ones: f(T),
      dx: a(T * C),
      dh: a(T * C),
      dq: a(T * Q),
      dk: a(T * KV),
      dv: a(T * KV),
      dattn: a(T * Q),
      dgate: a(T * I),
      dup: a(T * I),
      dact: a(T * I),
      logits: f(T * s.vocab),
      hn: a(T * C),
      rstdF: f(T),
      scratch: a(T * C),
    },
    layer: {
      h1: a(T * C),
      rstd1: f(T),
      q: a(T * Q),
      k: a(T * KV),
      v: a(T * KV),
      attn: a(T * Q),
      lse: f(T * s.heads),
      x2: a(T * C),
      h2: a(T * C),
      rstd2: f(T),
      gate: a(T * I),
      up: a(T * I),
      act: a(T * I),
      // LoRA drop(x)·Aᵀ per module [T, r], kept for backward
      ...Object.fromEntries(LORA_MODULES.map((m) => [`xa_${m}`, f(T * r)])),
    },
    layerInput: a(T * C),
  };
}

/** Scratch for T rows, grown on demand. */
class TrainWorkspace {
  T = 0;
  b: Record<string, DeviceBuffer> = {};
  layerInputs: DeviceBuffer[] = [];
  acts: Acts[] = [];

  constructor(readonly ctx: Context, readonly m: LlamaModel, readonly r: number, readonly dtype: DType, readonly recompute: boolean) {}

  ensure(T: number): void {
    if (T <= this.T) return;
    this.dispose();
    const layout = trainWorkspaceLayout(this.m.shape, T, this.r, dtypeSize(this.dtype));
    // (r = 0, full fine-tuning: the LoRA xa_ buffers are empty and not allocated)
    const alloc = (sizes: Record<string, number>) =>
      Object.fromEntries(Object.entries(sizes).filter(([, n]) => n > 0).map(([k, n]) => [k, this.ctx.alloc(n)]));
    this.b = alloc(layout.shared);
    this.b.ones.dispose();
    this.b.ones = this.ctx.upload(new Float32Array(T).fill(1));
    this.acts = Array.from({ length: this.recompute ? 1 : this.m.shape.layers }, () => alloc(layout.layer));
    this.layerInputs = Array.from({ length: this.m.shape.layers + 1 }, () => this.ctx.alloc(layout.layerInput));
    this.T = T;
  }

  actsOf(layer: number): Acts {
    return this.acts[this.recompute ? 0 : layer];
  }

  dispose(): void {
    for (const b of [...Object.values(this.b), ...this.layerInputs, ...this.acts.flatMap((x) => Object.values(x))]) b.dispose();
    this.b = {};
    this.layerInputs = [];
    this.acts = [];
    this.T = 0;
  }
}

/** What a training model trains: LoRA adapters on a frozen base, or the whole (dense f32) base. */
export type Trainable = "lora" | "full";

export class LoraTrainingModel {
  #ws: TrainWorkspace;
  readonly trainable: Trainable;
  /** LoRA mode: the adapter's weights; null in full mode. */
  readonly lora: LoraWeights | null;
  /** Full mode: the base's weights and their gradients; null in LoRA mode. */
  readonly full: FullWeights | null;
  readonly dtype: DType;
  readonly recompute: boolean;
  /** Dropout seeds change every step (deterministic from the step number). */
  step = 0;
  /** Evaluation turns dropout off. */
  #eval = false;
  /** The frozen base alone (LoRA terms skipped): DPO's reference model, with no second copy of weights. */
  #adapterOff = false;

  /** `params`: LoraWeights (LoRA mode) or FullWeights over this model (full mode). */
  constructor(readonly ctx: Context, readonly model: LlamaModel, params: LoraWeights | FullWeights, opts: TrainingModelOptions = {}) {
    this.dtype = opts.computeDtype ?? F32;
    if (this.dtype !== F32 && this.dtype !== DType.BF16) throw new RangeError("computeDtype must be F32 or BF16");
    this.recompute = opts.recompute ?? true;
    this.lora = params instanceof LoraWeights ? params : null;
    this.full = params instanceof LoraWeights ? null : params;
    this.trainable = this.lora ? "lora" : "full";
    // full mode keeps no LoRA activations (r = 0: the xa_ buffers are empty)
    this.#ws = new TrainWorkspace(ctx, model, this.lora?.spec.r ?? 0, this.dtype, this.recompute);
  }

  #shape(p: { inF: number; outF: number; layer: number; module: LoraModule }, T: number): ops.LoraShape {
    const module = LORA_MODULES.indexOf(p.module), lora = this.lora!;
    return {
      T,
      inF: p.inF,
      outF: p.outF,
      r: lora.spec.r,
      scale: lora.scale,
      dropout: this.#eval ? 0 : lora.spec.dropout,
      seed: BigInt(this.step) * 1000003n + BigInt(p.layer * 16 + module) * 7919n,
    };
  }

  /** y (=|+=) x·Wᵀ (+bias), plus the LoRA term; its drop(x)·Aᵀ is kept for backward. */
  #linear(l: number, m: LoraModule, acts: Acts, y: DeviceBuffer, x: DeviceBuffer, T: number, accumulate: boolean): void {
    this.model.layers[l].proj[m].forward(this.ctx, y, x, T, accumulate, this.#ws.b.ones, this.dtype);
    const p = this.#adapterOff ? undefined : this.lora?.get(l, m);
    if (p) ops.loraForward(this.ctx, y, acts[`xa_${m}`], x, p.A, p.B, this.#shape(p, T), this.dtype);
  }

  /** dx (=|+=) from dy through the weight and the LoRA term; accumulates dA, dB (LoRA mode) or
   * the weight's gradient dW [out, in] += dy [T, out]ᵀ · x [T, in] (full mode). */
  #linearBackward(
    l: number,
    m: LoraModule,
    acts: Acts,
    dx: DeviceBuffer,
    dy: DeviceBuffer,
    x: DeviceBuffer,
    T: number,
    accumulate: boolean,
  ): void {
    const lin = this.model.layers[l].proj[m];
    lin.backward(this.ctx, dx, dy, T, accumulate, this.dtype);
    if (this.full) {
      const dW = this.full.layers[l].proj[m].grad;
      ops.gemm(this.ctx, {
        c: dW,
        cType: F32,
        a: dy,
        aType: this.dtype,
        b: x,
        bType: this.dtype,
        m: lin.rows,
        n: lin.cols,
        k: T,
        transA: true,
        beta: 1,
      });
      return;
    }
    const p = this.lora!.get(l, m);
    if (p) ops.loraBackward(this.ctx, dx, p.dA, p.dB, dy, x, acts[`xa_${m}`], p.A, p.B, this.#shape(p, T), this.dtype);
  }

  #cu(batch: TrainBatch, T: number): ops.PackedShape {
    const s = this.model.shape;
    return { cuSeqlens: batch.cuSeqlens, T, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim };
  }

  /** Layer l's forward from `input` into `out`, keeping its activations in `acts`. */
  #layerForward(l: number, acts: Acts, input: DeviceBuffer, out: DeviceBuffer, batch: TrainBatch, T: number): void {
    const s = this.model.shape, w = this.#ws.b, L = this.model.layers[l], dt = this.dtype, es = dtypeSize(dt);
    const { h1, q, k, v, attn, x2, h2, gate, up, act } = acts;
    ops.rmsnorm(this.ctx, h1, acts.rstd1, input, L.inputNorm, T, s.hidden, s.rmsEps, dt);
    this.#linear(l, "q_proj", acts, q, h1, T, false);
    this.#linear(l, "k_proj", acts, k, h1, T, false);
    this.#linear(l, "v_proj", acts, v, h1, T, false);
    ops.rope(this.ctx, q, q, w.pos, this.model.invFreq, T, s.heads, s.headDim, dt);
    ops.rope(this.ctx, k, k, w.pos, this.model.invFreq, T, s.kvHeads, s.headDim, dt);
    ops.attention(this.ctx, attn, acts.lse, q, k, v, this.#cu(batch, T), 1 / Math.sqrt(s.headDim), dt);
    ops.copyDevice(this.ctx, x2, input, T * s.hidden * es);
    this.#linear(l, "o_proj", acts, x2, attn, T, true);
    ops.rmsnorm(this.ctx, h2, acts.rstd2, x2, L.postNorm, T, s.hidden, s.rmsEps, dt);
    this.#linear(l, "gate_proj", acts, gate, h2, T, false);
    this.#linear(l, "up_proj", acts, up, h2, T, false);
    ops.siluMul(this.ctx, act, gate, up, T * s.intermediate, dt);
    ops.copyDevice(this.ctx, out, x2, T * s.hidden * es);
    this.#linear(l, "down_proj", acts, out, act, T, true);
  }

  /** Backward of layer l: ws.dx holds the gradient of the layer's output and becomes the
   * gradient of its input. */
  #layerBackward(l: number, input: DeviceBuffer, batch: TrainBatch, T: number): void {
    const s = this.model.shape, w = this.#ws.b, L = this.model.layers[l], dt = this.dtype;
    const acts = this.#ws.actsOf(l);
    if (this.recompute) this.#layerForward(l, acts, input, w.scratch, batch, T);
    const C = s.hidden, F = this.full?.layers[l];
    // MLP: x3 = x2 + down(silu(gate(h2)) * up(h2))
    this.#linearBackward(l, "down_proj", acts, w.dact, w.dx, acts.act, T, false);
    ops.siluMulBackward(this.ctx, w.dgate, w.dup, w.dact, acts.gate, acts.up, T * s.intermediate, dt);
    this.#linearBackward(l, "gate_proj", acts, w.dh, w.dgate, acts.h2, T, false);
    this.#linearBackward(l, "up_proj", acts, w.dh, w.dup, acts.h2, T, true);
    // dx2 = dx3 + ...; full mode: d(postNorm) += Σ_rows dh·x2·rstd2
    ops.rmsnormBackward(this.ctx, w.dx, F?.postNorm.grad, w.dh, acts.x2, L.postNorm, acts.rstd2, T, C, dt);
    // attention: x2 = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1)))
    this.#linearBackward(l, "o_proj", acts, w.dattn, w.dx, acts.attn, T, false);
    ops.attentionBackward(
      this.ctx,
      { dq: w.dq, dk: w.dk, dv: w.dv },
      w.dattn,
      acts.attn,
      acts.lse,
      acts.q,
      acts.k,
      acts.v,
      this.#cu(batch, T),
      1 / Math.sqrt(s.headDim),
      dt,
    );
    ops.ropeBackward(this.ctx, w.dq, w.dq, w.pos, this.model.invFreq, T, s.heads, s.headDim, dt);
    ops.ropeBackward(this.ctx, w.dk, w.dk, w.pos, this.model.invFreq, T, s.kvHeads, s.headDim, dt);
    this.#linearBackward(l, "q_proj", acts, w.dh, w.dq, acts.h1, T, false);
    this.#linearBackward(l, "k_proj", acts, w.dh, w.dk, acts.h1, T, true);
    this.#linearBackward(l, "v_proj", acts, w.dh, w.dv, acts.h1, T, true);
    ops.rmsnormBackward(this.ctx, w.dx, F?.inputNorm.grad, w.dh, input, L.inputNorm, acts.rstd1, T, C, dt);
  }

  /** Uploads the batch, runs embedding, every layer, the final norm, lm_head and the loss. */
  #forward(batch: TrainBatch, gradScale: number | null): StepResult {
    const { weightSum } = this.#logits(batch);
    const T = batch.tokens.length, w = this.#ws.b;
    // token accuracy from the logits, before the loss op turns them into dlogits in place
    ops.topk(this.ctx, w.top1, w.top1v, w.logits, T, this.model.shape.vocab, 1, F32);
    const top1 = w.top1.readI32(0, T);
    const weights = batch.lossWeights;
    let correct = 0;
    for (let i = 0; i < T; i++) if (batch.targets[i] >= 0 && top1[i] === batch.targets[i]) correct += weights ? weights[i] : 1;
    // head: loss = Σ w·nll / Σ w; dlogits (in place, f32) scaled accordingly
    const scale = gradScale !== null && weightSum > 0 ? gradScale / weightSum : 0;
    ops.crossEntropy(
      this.ctx,
      w.losses,
      gradScale !== null ? w.logits : null,
      w.logits,
      w.targets,
      w.weights,
      scale,
      T,
      this.model.shape.vocab,
      F32,
    );
    const losses = w.losses.readF32(0, T);
    let total = 0;
    for (let i = 0; i < T; i++) total += losses[i];
    return { loss: weightSum > 0 ? total / weightSum : 0, lossTokens: weightSum, correct };
  }

  /** Uploads the batch (tokens, targets, positions, weights) and runs it up to the logits. */
  #logits(batch: TrainBatch): { weightSum: number } {
    const T = batch.tokens.length;
    if (batch.targets.length !== T || batch.positions.length !== T) {
      throw new RangeError("tokens, targets and positions must have the same length");
    }
    const s = this.model.shape, ws = this.#ws, dt = this.dtype;
    ws.ensure(T);
    const w = ws.b;
    w.ids.write(batch.tokens);
    w.targets.write(batch.targets);
    w.pos.write(batch.positions);
    const weights = batch.lossWeights ?? Float32Array.from(batch.targets, (t) => (t >= 0 ? 1 : 0));
    let weightSum = 0;
    for (let i = 0; i < T; i++) if (batch.targets[i] >= 0) weightSum += weights[i];
    w.weights.write(weights);
    ops.embedding(this.ctx, ws.layerInputs[0], w.ids, this.model.embed.buf, T, s.vocab, s.hidden, dt, this.model.embed.dtype);
    for (let l = 0; l < s.layers; l++) this.#layerForward(l, ws.actsOf(l), ws.layerInputs[l], ws.layerInputs[l + 1], batch, T);
    const head = this.model.lmHead ?? this.model.embed;
    ops.rmsnorm(this.ctx, w.hn, w.rstdF, ws.layerInputs[s.layers], this.model.finalNorm, T, s.hidden, s.rmsEps, dt);
    ops.gemm(this.ctx, {
      c: w.logits,
      cType: F32,
      a: w.hn,
      aType: dt,
      b: head.buf,
      bType: head.dtype,
      m: T,
      n: s.vocab,
      k: s.hidden,
      transB: true,
    });
    return { weightSum };
  }

  /** Σ weight·log p(target) of each packed sequence, from the losses of the last forward. */
  #sequenceLogprobs(batch: TrainBatch): Float64Array {
    const losses = this.#ws.b.losses.readF32(0, batch.tokens.length);
    const S = batch.cuSeqlens.length - 1;
    const out = new Float64Array(S);
    for (let i = 0; i < S; i++) for (let t = batch.cuSeqlens[i]; t < batch.cuSeqlens[i + 1]; t++) out[i] -= losses[t];
    return out;
  }

  /** Forward + backward of one micro-batch; LoRA gradients accumulate (scaled by gradScale). */
  forwardBackward(batch: TrainBatch, gradScale = 1): StepResult {
    const result = this.#forward(batch, gradScale);
    this.#backward(batch);
    return result;
  }

  /** From dlogits (in w.logits) back through lm_head, the final norm and every layer into dA, dB
   * (LoRA mode), or into every base weight's gradient (full mode). */
  #backward(batch: TrainBatch): void {
    const T = batch.tokens.length, s = this.model.shape, ws = this.#ws, w = ws.b, dt = this.dtype, full = this.full;
    const head = this.model.lmHead ?? this.model.embed;
    // full mode: d(lm_head) [V, C] += dlogits [T, V]ᵀ · hn [T, C] (tied: into the embeddings' gradient)
    if (full) {
      const dHead = (full.head ?? full.embed).grad;
      ops.gemm(this.ctx, {
        c: dHead,
        cType: F32,
        a: w.logits,
        aType: F32,
        b: w.hn,
        bType: dt,
        m: s.vocab,
        n: s.hidden,
        k: T,
        transA: true,
        beta: 1,
      });
    }
    // dhn = dlogits · W_head
    ops.gemm(this.ctx, { c: w.dh, cType: dt, a: w.logits, aType: F32, b: head.buf, bType: head.dtype, m: T, n: s.hidden, k: s.vocab });
    ops.fillZero(this.ctx, w.dx, T * s.hidden * dtypeSize(dt));
    ops.rmsnormBackward(
      this.ctx,
      w.dx,
      full?.finalNorm.grad,
      w.dh,
      ws.layerInputs[s.layers],
      this.model.finalNorm,
      w.rstdF,
      T,
      s.hidden,
      dt,
    );
    for (let l = s.layers - 1; l >= 0; l--) this.#layerBackward(l, ws.layerInputs[l], batch, T);
    // full mode: the embeddings' gradient, a scatter-add of the first layer's input gradient by token id
    if (full) ops.embeddingBackward(this.ctx, full.embed.grad, w.dx, w.ids, T, s.vocab, s.hidden, dt);
  }

  /** Log-probability of each packed sequence's loss tokens (weighted), no gradients, no dropout;
   * `adapter: false` runs the frozen base alone (DPO's reference). */
  sequenceLogprobs(batch: TrainBatch, adapter = true): Float64Array {
    this.#eval = true;
    this.#adapterOff = !adapter;
    try {
      this.#forward(batch, null);
      return this.#sequenceLogprobs(batch);
    } finally {
      this.#eval = false;
      this.#adapterOff = false;
    }
  }

  /**
   * DPO (Rafailov et al. 2023) forward + backward on pairs packed as sequences [chosen₀,
   * rejected₀, chosen₁, …] with `reference` = sequenceLogprobs(batch, false). Per pair
   * z = β·((π_c − ref_c) − (π_r − ref_r)) and loss = −log σ(z) = softplus(−z); dloss/dπ_c =
   * −β·σ(−z) and dloss/dπ_r = +β·σ(−z). Since π = −Σ w·nll, the backward is the cross-entropy
   * backward with per-token weights +β·σ(−z)·w on the chosen tokens and −β·σ(−z)·w on the rejected,
   * averaged over pairs and scaled by gradScale: one policy forward, then the loss op again on the
   * kept logits with those weights, then the usual backward.
   */
  dpoForwardBackward(batch: TrainBatch, reference: Float64Array, beta: number, gradScale = 1): DpoResult {
    if (this.full) throw new RangeError("DPO needs a frozen reference model: it trains LoRA adapters, not the full base");
    const S = batch.cuSeqlens.length - 1;
    if (S % 2 !== 0 || reference.length !== S) {
      throw new RangeError("DPO batches hold pairs: an even number of sequences and a reference per sequence");
    }
    const pairs = S / 2, T = batch.tokens.length, w = this.#ws.b;
    this.#logits(batch);
    ops.crossEntropy(this.ctx, w.losses, null, w.logits, w.targets, w.weights, 0, T, this.model.shape.vocab, F32);
    const policy = this.#sequenceLogprobs(batch);
    const base = batch.lossWeights ?? Float32Array.from(batch.targets, (t) => (t >= 0 ? 1 : 0));
    const weights = new Float32Array(T);
    const r: DpoResult = { loss: 0, pairs, chosenReward: 0, rejectedReward: 0, correct: 0, lossTokens: 0 };
    for (let i = 0; i < pairs; i++) {
      const chosen = beta * (policy[2 * i] - reference[2 * i]);
      const rejected = beta * (policy[2 * i + 1] - reference[2 * i + 1]);
      const z = chosen - rejected;
      r.loss += (z > 0 ? Math.log1p(Math.exp(-z)) : -z + Math.log1p(Math.exp(z))) / pairs; // softplus(−z), stable
      r.chosenReward += chosen;
      r.rejectedReward += rejected;
      if (z > 0) r.correct++;
      const g = (beta / (1 + Math.exp(z))) * gradScale / pairs; // β·σ(−z)
      for (const [seq, sign] of [[2 * i, 1], [2 * i + 1, -1]]) {
        for (let t = batch.cuSeqlens[seq]; t < batch.cuSeqlens[seq + 1]; t++) {
          if (batch.targets[t] < 0) continue;
          weights[t] = sign * g * base[t];
          r.lossTokens += base[t];
        }
      }
    }
    w.weights.write(weights);
    ops.crossEntropy(this.ctx, w.losses, w.logits, w.logits, w.targets, w.weights, 1, T, this.model.shape.vocab, F32);
    this.#backward(batch);
    return r;
  }

  /** Loss only (validation): no gradients, no dropout. */
  evaluate(batch: TrainBatch): StepResult {
    this.#eval = true;
    try {
      return this.#forward(batch, null);
    } finally {
      this.#eval = false;
    }
  }

  dispose(): void {
    this.#ws.dispose();
  }
}
