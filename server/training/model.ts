// model.ts — QLoRA training forward and backward over a frozen (4-bit or dense) Llama with LoRA
// on chosen modules. Sequences are packed into one batch of T rows (cu_seqlens: no attention
// across sequences). Gradient checkpointing per layer: only each layer's input is kept; the
// layer's activations are recomputed during backward. Gradients flow only into LoRA A and B.
import { type Context, type DeviceBuffer, DType } from "../ffi/tensor.ts";
import * as ops from "../ffi/ops.ts";
import { type LlamaModel, LORA_MODULES, type LoraModule } from "../model/llama.ts";
import type { LoraWeights } from "./lora.ts";

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
}

const F = DType.F32;

/** Scratch for T rows, grown on demand. */
class TrainWorkspace {
  T = 0;
  b: Record<string, DeviceBuffer> = {};
  layerInputs: DeviceBuffer[] = [];
  constructor(readonly ctx: Context, readonly m: LlamaModel, readonly r: number) {}

  ensure(T: number): void {
    if (T <= this.T) return;
    this.dispose();
    const s = this.m.shape;
    const C = s.hidden, I = s.intermediate, Q = s.heads * s.headDim, KV = s.kvHeads * s.headDim;
    const f = (n: number) => this.ctx.alloc(n * 4);
    const maxIn = Math.max(C, Q, I);
    this.b = {
      ids: f(T), targets: f(T), weights: f(T), pos: f(T), losses: f(T), ones: this.ctx.upload(new Float32Array(T).fill(1)),
      x: f(T * C), x2: f(T * C), h1: f(T * C), h2: f(T * C), rstd1: f(T), rstd2: f(T),
      q: f(T * Q), k: f(T * KV), v: f(T * KV), attn: f(T * Q), lse: f(T * s.heads),
      gate: f(T * I), up: f(T * I), act: f(T * I),
      dx: f(T * C), dh: f(T * C), dq: f(T * Q), dk: f(T * KV), dv: f(T * KV), dattn: f(T * Q),
      dgate: f(T * I), dup: f(T * I), dact: f(T * I),
      // LoRA drop(x)·Aᵀ per module [T, r], kept from the (re)computed forward for backward
      ...Object.fromEntries(LORA_MODULES.map((m) => [`xa_${m}`, f(T * this.r)])),
      logits: f(T * s.vocab), hn: f(T * C), rstdF: f(T),
      spare: f(T * maxIn),
    };
    this.layerInputs = Array.from({ length: s.layers + 1 }, () => f(T * C));
    this.T = T;
  }

  dispose(): void {
    for (const b of [...Object.values(this.b), ...this.layerInputs]) b.dispose();
    this.b = {};
    this.layerInputs = [];
    this.T = 0;
  }
}

export class LoraTrainingModel {
  #ws: TrainWorkspace;
  /** Dropout seeds change every step (deterministic from the step number). */
  step = 0;

  constructor(readonly ctx: Context, readonly model: LlamaModel, readonly lora: LoraWeights) {
    this.#ws = new TrainWorkspace(ctx, model, lora.spec.r);
  }

  #seed(layer: number, module: number, salt: number): bigint {
    return BigInt(this.step) * 1000003n + BigInt(layer * 16 + module) * 7919n + BigInt(salt);
  }

  /** y (=|+=) x·Wᵀ (+bias), plus the LoRA term; its drop(x)·Aᵀ is kept for backward. */
  #linear(l: number, m: LoraModule, y: DeviceBuffer, x: DeviceBuffer, T: number, accumulate: boolean): void {
    const lin = this.model.layers[l].proj[m];
    lin.forward(this.ctx, y, x, T, accumulate, this.#ws.b.ones);
    const p = this.lora.get(l, m);
    if (p) ops.loraForward(this.ctx, y, this.#ws.b[`xa_${m}`], x, p.A, p.B, this.#shape(p, T), F);
  }

  #shape(p: { inF: number; outF: number; layer: number; module: LoraModule }, T: number): ops.LoraShape {
    return {
      T,
      inF: p.inF,
      outF: p.outF,
      r: this.lora.spec.r,
      scale: this.lora.scale,
      dropout: this.lora.spec.dropout,
      seed: this.#seed(p.layer, LORA_MODULES.indexOf(p.module), 0),
    };
  }

  /** dx (+=) from dy through the frozen weight and the LoRA term; accumulates dA, dB. */
  #linearBackward(l: number, m: LoraModule, dx: DeviceBuffer, dy: DeviceBuffer, x: DeviceBuffer, T: number, accumulate: boolean): void {
    const lin = this.model.layers[l].proj[m];
    lin.backward(this.ctx, dx, dy, T, accumulate);
    const p = this.lora.get(l, m);
    if (p) ops.loraBackward(this.ctx, dx, p.dA, p.dB, dy, x, this.#ws.b[`xa_${m}`], p.A, p.B, this.#shape(p, T), F);
  }

  /** Layer l's forward from `input` into `out`, keeping its intermediates in the workspace. */
  #layerForward(l: number, input: DeviceBuffer, out: DeviceBuffer, batch: TrainBatch, T: number): void {
    const s = this.model.shape, w = this.#ws.b, L = this.model.layers[l];
    const cu = { cuSeqlens: batch.cuSeqlens, T, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim };
    ops.rmsnorm(this.ctx, w.h1, w.rstd1, input, L.inputNorm, T, s.hidden, s.rmsEps, F);
    this.#linear(l, "q_proj", w.q, w.h1, T, false);
    this.#linear(l, "k_proj", w.k, w.h1, T, false);
    this.#linear(l, "v_proj", w.v, w.h1, T, false);
    ops.rope(this.ctx, w.q, w.q, w.pos, this.model.invFreq, T, s.heads, s.headDim, F);
    ops.rope(this.ctx, w.k, w.k, w.pos, this.model.invFreq, T, s.kvHeads, s.headDim, F);
    ops.attention(this.ctx, w.attn, w.lse, w.q, w.k, w.v, cu, 1 / Math.sqrt(s.headDim), F);
    ops.copyDevice(this.ctx, w.x2, input, T * s.hidden * 4);
    this.#linear(l, "o_proj", w.x2, w.attn, T, true);
    ops.rmsnorm(this.ctx, w.h2, w.rstd2, w.x2, L.postNorm, T, s.hidden, s.rmsEps, F);
    this.#linear(l, "gate_proj", w.gate, w.h2, T, false);
    this.#linear(l, "up_proj", w.up, w.h2, T, false);
    ops.siluMul(this.ctx, w.act, w.gate, w.up, T * s.intermediate, F);
    ops.copyDevice(this.ctx, out, w.x2, T * s.hidden * 4);
    this.#linear(l, "down_proj", out, w.act, T, true);
  }

  /** Backward of layer l: dOut in ws.dx (gradient w.r.t. the layer output) → ws.dx becomes the
   * gradient w.r.t. the layer input. Recomputes the layer's forward first. */
  #layerBackward(l: number, input: DeviceBuffer, batch: TrainBatch, T: number): void {
    const s = this.model.shape, w = this.#ws.b, L = this.model.layers[l];
    const C = s.hidden;
    this.#layerForward(l, input, w.spare, batch, T); // recompute (output unused)
    // MLP: x3 = x2 + down(silu(gate(h2)) * up(h2))
    this.#linearBackward(l, "down_proj", w.dact, w.dx, w.act, T, false);
    ops.siluMulBackward(this.ctx, w.dgate, w.dup, w.dact, w.gate, w.up, T * s.intermediate, F);
    this.#linearBackward(l, "gate_proj", w.dh, w.dgate, w.h2, T, false);
    this.#linearBackward(l, "up_proj", w.dh, w.dup, w.h2, T, true);
    ops.rmsnormBackward(this.ctx, w.dx, null, w.dh, w.x2, L.postNorm, w.rstd2, T, C, F); // dx2 = dx3 + ...
    // attention: x2 = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1)))
    this.#linearBackward(l, "o_proj", w.dattn, w.dx, w.attn, T, false);
    const cu = { cuSeqlens: batch.cuSeqlens, T, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim };
    ops.attentionBackward(this.ctx, { dq: w.dq, dk: w.dk, dv: w.dv }, w.dattn, w.attn, w.lse, w.q, w.k, w.v, cu, 1 / Math.sqrt(s.headDim), F);
    ops.ropeBackward(this.ctx, w.dq, w.dq, w.pos, this.model.invFreq, T, s.heads, s.headDim, F);
    ops.ropeBackward(this.ctx, w.dk, w.dk, w.pos, this.model.invFreq, T, s.kvHeads, s.headDim, F);
    // q/k/v read roped q/k in the recompute; their LoRA inputs are h1, unaffected by rope.
    this.#linearBackward(l, "q_proj", w.dh, w.dq, w.h1, T, false);
    this.#linearBackward(l, "k_proj", w.dh, w.dk, w.h1, T, true);
    this.#linearBackward(l, "v_proj", w.dh, w.dv, w.h1, T, true);
    ops.rmsnormBackward(this.ctx, w.dx, null, w.dh, input, L.inputNorm, w.rstd1, T, C, F);
  }

  /** Forward + backward of one micro-batch; LoRA gradients accumulate (scaled by gradScale). */
  forwardBackward(batch: TrainBatch, gradScale = 1): StepResult {
    const T = batch.tokens.length;
    if (batch.targets.length !== T || batch.positions.length !== T) throw new RangeError("tokens, targets and positions must have the same length");
    const s = this.model.shape, ws = this.#ws;
    ws.ensure(T);
    const w = ws.b;
    w.ids.write(batch.tokens);
    w.targets.write(batch.targets);
    w.pos.write(batch.positions);
    const weights = batch.lossWeights ?? Float32Array.from(batch.targets, (t) => (t >= 0 ? 1 : 0));
    let weightSum = 0;
    for (let i = 0; i < T; i++) if (batch.targets[i] >= 0) weightSum += weights[i];
    w.weights.write(weights);
    ops.embedding(this.ctx, ws.layerInputs[0], w.ids, this.model.embed.buf, T, s.vocab, s.hidden, F, this.model.embed.dtype);
    for (let l = 0; l < s.layers; l++) this.#layerForward(l, ws.layerInputs[l], ws.layerInputs[l + 1], batch, T);
    // head: loss = Σ w·nll / Σ w; dlogits scaled accordingly
    const head = this.model.lmHead ?? this.model.embed;
    ops.rmsnorm(this.ctx, w.hn, w.rstdF, ws.layerInputs[s.layers], this.model.finalNorm, T, s.hidden, s.rmsEps, F);
    ops.gemm(this.ctx, { c: w.logits, cType: F, a: w.hn, aType: F, b: head.buf, bType: head.dtype, m: T, n: s.vocab, k: s.hidden, transB: true });
    const scale = weightSum > 0 ? gradScale / weightSum : 0;
    ops.crossEntropy(this.ctx, w.losses, w.logits, w.logits, w.targets, w.weights, scale, T, s.vocab, F);
    const losses = w.losses.readF32(0, T);
    let total = 0;
    for (let i = 0; i < T; i++) total += losses[i];
    // dh = dlogits · head; dx = rmsnorm backward
    ops.gemm(this.ctx, { c: w.dh, cType: F, a: w.logits, aType: F, b: head.buf, bType: head.dtype, m: T, n: s.hidden, k: s.vocab });
    ops.fillZero(this.ctx, w.dx, T * s.hidden * 4);
    ops.rmsnormBackward(this.ctx, w.dx, null, w.dh, ws.layerInputs[s.layers], this.model.finalNorm, w.rstdF, T, s.hidden, F);
    for (let l = s.layers - 1; l >= 0; l--) this.#layerBackward(l, ws.layerInputs[l], batch, T);
    return { loss: weightSum > 0 ? total / weightSum : 0, lossTokens: weightSum };
  }

  /** Loss only (validation), no gradients. */
  evaluate(batch: TrainBatch): StepResult {
    const T = batch.tokens.length;
    const s = this.model.shape, ws = this.#ws;
    ws.ensure(T);
    const w = ws.b;
    w.ids.write(batch.tokens);
    w.targets.write(batch.targets);
    w.pos.write(batch.positions);
    const weights = batch.lossWeights ?? Float32Array.from(batch.targets, (t) => (t >= 0 ? 1 : 0));
    let weightSum = 0;
    for (let i = 0; i < T; i++) if (batch.targets[i] >= 0) weightSum += weights[i];
    w.weights.write(weights);
    const savedDropout = this.lora.spec.dropout;
    (this.lora.spec as { dropout: number }).dropout = 0;
    try {
      ops.embedding(this.ctx, ws.layerInputs[0], w.ids, this.model.embed.buf, T, s.vocab, s.hidden, F, this.model.embed.dtype);
      for (let l = 0; l < s.layers; l++) this.#layerForward(l, ws.layerInputs[l], ws.layerInputs[l + 1], batch, T);
    } finally {
      (this.lora.spec as { dropout: number }).dropout = savedDropout;
    }
    const head = this.model.lmHead ?? this.model.embed;
    ops.rmsnorm(this.ctx, w.hn, w.rstdF, ws.layerInputs[s.layers], this.model.finalNorm, T, s.hidden, s.rmsEps, F);
    ops.gemm(this.ctx, { c: w.logits, cType: F, a: w.hn, aType: F, b: head.buf, bType: head.dtype, m: T, n: s.vocab, k: s.hidden, transB: true });
    ops.crossEntropy(this.ctx, w.losses, null, w.logits, w.targets, w.weights, 1, T, s.vocab, F);
    const losses = w.losses.readF32(0, T);
    let total = 0;
    for (let i = 0; i < T; i++) total += losses[i];
    return { loss: weightSum > 0 ? total / weightSum : 0, lossTokens: weightSum };
  }

  dispose(): void {
    this.#ws.dispose();
  }
}
