// llama.ts — the Llama-family forward pass over the native ops, for a batch of sequences on a
// paged KV cache (prefill and decode in one call). Activations and the KV cache are f32, or bf16
// when the model is built with activationDtype BF16 (half the KV memory, bf16 GEMMs and the int8
// fused 4-bit matvec); logits are always f32.
// The engine decides what goes in a batch; linear.ts runs the (4-bit) projections, the adapter
// binder their LoRA terms, and training/model.ts the training forward and backward.
import { type Context, DeviceBuffer, DType, dtypeSize } from "../ffi/tensor.ts";
import * as ops from "../ffi/ops.ts";
import type { Linear } from "./linear.ts";

export interface LlamaShape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  rmsEps: number;
}

export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

export interface LlamaLayer {
  inputNorm: DeviceBuffer; // f32 [C]
  postNorm: DeviceBuffer; // f32 [C]
  proj: Record<LoraModule, Linear>;
}

/** A 16/32-bit matrix on the device. */
export interface DenseMatrix {
  buf: DeviceBuffer;
  dtype: DType;
}

/** Per-batch LoRA: which adapter slot each token row uses, and each slot's weights per module. */
export interface BatchAdapters {
  rowAdapter: Int32Array; // [T], -1 = base only
  slots(layer: number, module: LoraModule): ops.AdapterSlots | null;
}

export interface ForwardBatch {
  tokens: Int32Array; // [T]
  positions: Int32Array; // [T]
  slots: Int32Array; // [T] KV-cache slot of each token
  paged: ops.PagedBatch;
  logitRows: Int32Array; // rows whose logits are returned, e.g. the last of each sequence
  adapters?: BatchAdapters;
}

export class KvCache {
  readonly k: DeviceBuffer[] = [];
  readonly v: DeviceBuffer[] = [];
  readonly shape: ops.CacheShape;

  constructor(
    ctx: Context,
    layers: number,
    numBlocks: number,
    blockSize: number,
    kvHeads: number,
    headDim: number,
    readonly dtype: DType = DType.F32,
  ) {
    this.shape = { numBlocks, blockSize, kvHeads, headDim };
    const bytes = numBlocks * blockSize * kvHeads * headDim * dtypeSize(dtype);
    // Not zero-filled: paged attention reads only positions < each sequence's length, which the
    // same or an earlier forward wrote (both backends' kernels bound their key loops by it), so
    // no slot is read before it is written. Untouched, a large allocation stays virtual (glibc
    // serves it with mmap) and pages become resident only as sequences fill them.
    for (let l = 0; l < layers; l++) {
      this.k.push(ctx.alloc(bytes));
      this.v.push(ctx.alloc(bytes));
    }
  }

  get bytes(): number {
    return this.k.reduce((s, b) => s + b.bytes, 0) * 2;
  }

  dispose(): void {
    for (const b of [...this.k, ...this.v]) b.dispose();
  }
}

/** Scratch buffers for up to `tokens` rows, grown on demand. */
class Workspace {
  tokens = 0;
  logitRows = 0;
  bufs: Record<string, DeviceBuffer> = {};

  constructor(private ctx: Context, private shape: LlamaShape, private dtype: DType) {}

  ensure(T: number, R: number): void {
    if (T <= this.tokens && R <= this.logitRows) return;
    const s = this.shape;
    const t = Math.max(T, this.tokens, 16), r = Math.max(R, this.logitRows, 1);
    for (const b of Object.values(this.bufs)) b.dispose();
    const f = (n: number) => this.ctx.alloc(n * 4); // f32 / i32
    const a = (n: number) => this.ctx.alloc(n * dtypeSize(this.dtype)); // activations
    this.bufs = {
      x: a(t * s.hidden),
      h: a(t * s.hidden),
      q: a(t * s.heads * s.headDim),
      k: a(t * s.kvHeads * s.headDim),
      v: a(t * s.kvHeads * s.headDim),
      attn: a(t * s.heads * s.headDim),
      gate: a(t * s.intermediate),
      up: a(t * s.intermediate),
      ids: f(t),
      pos: f(t),
      slots: f(t),
      ones: this.ctx.upload(new Float32Array(t).fill(1)),
      sel: a(r * s.hidden),
      selNorm: a(r * s.hidden),
      logits: f(r * s.vocab),
    };
    this.tokens = t;
    this.logitRows = r;
  }

  dispose(): void {
    for (const b of Object.values(this.bufs)) b.dispose();
    this.bufs = {};
  }
}

/** Rows of logits computed at once (the workspace holds this many rows of vocabulary logits). */
const LOGIT_SLICE = 256;

export class LlamaModel {
  #ws: Workspace;

  constructor(
    readonly ctx: Context,
    readonly shape: LlamaShape,
    readonly embed: DenseMatrix, // [V, C]
    readonly layers: LlamaLayer[],
    readonly finalNorm: DeviceBuffer, // f32 [C]
    readonly lmHead: DenseMatrix | null, // [V, C]; null = tied to embed
    readonly invFreq: DeviceBuffer, // f32 [D/2]
    readonly activationDtype: DType = DType.F32,
  ) {
    this.#ws = new Workspace(ctx, shape, activationDtype);
  }

  newKvCache(numBlocks: number, blockSize: number): KvCache {
    return new KvCache(this.ctx, this.shape.layers, numBlocks, blockSize, this.shape.kvHeads, this.shape.headDim, this.activationDtype);
  }

  /** Runs the batch through the model, writing its keys/values into the cache, and returns
   * the logits of the requested rows: [logitRows.length, vocab], f32. */
  forward(batch: ForwardBatch, cache: KvCache): Float32Array {
    const { ctx, shape: s } = this;
    const T = batch.tokens.length, R = batch.logitRows.length;
    if (batch.positions.length !== T || batch.slots.length !== T) {
      throw new RangeError("tokens, positions and slots must have the same length");
    }
    this.#ws.ensure(T, Math.min(R, LOGIT_SLICE));
    const w = this.#ws.bufs;
    const F = this.activationDtype;
    if (cache.dtype !== F) throw new TypeError("the KV cache was made for another activation dtype");
    w.ids.write(batch.tokens);
    w.pos.write(batch.positions);
    w.slots.write(batch.slots);
    ops.embedding(ctx, w.x, w.ids, this.embed.buf, T, s.vocab, s.hidden, F, this.embed.dtype);
    const scale = 1 / Math.sqrt(s.headDim);
    const lora = (layer: number, module: LoraModule, y: DeviceBuffer, x: DeviceBuffer, lin: Linear) => {
      const a = batch.adapters;
      if (!a) return;
      const slots = a.slots(layer, module);
      if (slots) ops.loraMulti(ctx, y, x, a.rowAdapter, slots, T, lin.cols, lin.rows, F);
    };
    const linear = (layer: number, module: LoraModule, y: DeviceBuffer, x: DeviceBuffer, accumulate: boolean) => {
      const lin = this.layers[layer].proj[module];
      lin.forward(ctx, y, x, T, accumulate, w.ones, F);
      lora(layer, module, y, x, lin);
    };
    for (let l = 0; l < s.layers; l++) {
      const layer = this.layers[l];
      ops.rmsnorm(ctx, w.h, null, w.x, layer.inputNorm, T, s.hidden, s.rmsEps, F);
      linear(l, "q_proj", w.q, w.h, false);
      linear(l, "k_proj", w.k, w.h, false);
      linear(l, "v_proj", w.v, w.h, false);
      ops.rope(ctx, w.q, w.q, w.pos, this.invFreq, T, s.heads, s.headDim, F);
      ops.rope(ctx, w.k, w.k, w.pos, this.invFreq, T, s.kvHeads, s.headDim, F);
      ops.kvCacheWrite(ctx, cache.k[l], cache.v[l], w.k, w.v, w.slots, T, cache.shape, F);
      ops.attentionPaged(ctx, w.attn, w.q, cache.k[l], cache.v[l], batch.paged, cache.shape, s.heads, scale, F);
      linear(l, "o_proj", w.x, w.attn, true); // residual: x += attn · Woᵀ
      ops.rmsnorm(ctx, w.h, null, w.x, layer.postNorm, T, s.hidden, s.rmsEps, F);
      linear(l, "gate_proj", w.gate, w.h, false);
      linear(l, "up_proj", w.up, w.h, false);
      ops.siluMul(ctx, w.gate, w.gate, w.up, T * s.intermediate, F);
      linear(l, "down_proj", w.x, w.gate, true); // residual
    }
    // Only the requested rows go through the final norm and the vocabulary projection (none for a
    // batch of prompt chunks that all end before their prompt does), at most LOGIT_SLICE rows at a
    // time (a prompt's every row, for prompt logprobs, needs no R × vocab buffer).
    if (R === 0) return new Float32Array(0);
    const rowBytes = s.hidden * dtypeSize(F);
    const head = this.lmHead ?? this.embed;
    const out = R > LOGIT_SLICE ? new Float32Array(R * s.vocab) : null;
    for (let from = 0; from < R; from += LOGIT_SLICE) {
      const n = Math.min(LOGIT_SLICE, R - from);
      for (let i = 0; i < n; i++) {
        const r = batch.logitRows[from + i];
        if (r < 0 || r >= T) throw new RangeError(`logit row ${r} outside batch of ${T}`);
        ops.copyDevice(ctx, w.sel.at(i * rowBytes), w.x.at(r * rowBytes), rowBytes);
      }
      ops.rmsnorm(ctx, w.selNorm, null, w.sel, this.finalNorm, n, s.hidden, s.rmsEps, F);
      ops.gemm(ctx, {
        c: w.logits,
        cType: DType.F32,
        a: w.selNorm,
        aType: F,
        b: head.buf,
        bType: head.dtype,
        m: n,
        n: s.vocab,
        k: s.hidden,
        transB: true,
      });
      if (!out) return w.logits.readF32(0, n * s.vocab);
      out.set(w.logits.readF32(0, n * s.vocab), from * s.vocab);
    }
    return out ?? new Float32Array(0);
  }

  /** Bytes by kind, for the memory report. */
  weightBytes(): { packed: number; constants: number; dense: number } {
    const total = { packed: 0, constants: 0, dense: 0 };
    for (const layer of this.layers) {
      total.dense += layer.inputNorm.bytes + layer.postNorm.bytes;
      for (const m of LORA_MODULES) {
        const b = layer.proj[m].bytes();
        total.packed += b.packed;
        total.constants += b.constants;
        total.dense += b.dense;
      }
    }
    total.dense += this.embed.buf.bytes + this.finalNorm.bytes + (this.lmHead?.buf.bytes ?? 0) + this.invFreq.bytes;
    return total;
  }

  dispose(): void {
    this.#ws.dispose();
    for (const layer of this.layers) {
      layer.inputNorm.dispose();
      layer.postNorm.dispose();
      for (const m of LORA_MODULES) layer.proj[m].dispose();
    }
    this.embed.buf.dispose();
    this.lmHead?.buf.dispose();
    this.finalNorm.dispose();
    this.invFreq.dispose();
  }
}

export { DeviceBuffer };
