// ops.ts — typed wrappers of the native ops used by the model runtime and trainer. Each takes
// device buffers (or raw device pointers), checks the status and throws NativeError.
// Shapes follow native/include/qlora.h.
import { type Context, DeviceBuffer, type DType, type QWeight } from "./tensor.ts";

export type Dev = DeviceBuffer | Deno.PointerObject;
type Opt = Dev | null | undefined;

function p(x: Opt): Deno.PointerValue {
  if (x === null || x === undefined) return null;
  return x instanceof DeviceBuffer ? x.ptr : x;
}
const I = BigInt;

/** y [m, rows] (=|+=) x [m, cols] · Wᵀ */
export function matmul4bit(ctx: Context, y: Dev, x: Dev, w: QWeight, m: number, dtype: DType, accumulate = false): void {
  ctx.lib.check(ctx.lib.symbols.ql_matmul_4bit(ctx.ptr, p(y), p(x), w.ptr, I(m), dtype, accumulate ? 1 : 0), "ql_matmul_4bit");
}

/** dx [m, cols] (=|+=) dy [m, rows] · W */
export function matmul4bitBackward(ctx: Context, dx: Dev, dy: Dev, w: QWeight, m: number, dtype: DType, accumulate = false): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_matmul_4bit_backward(ctx.ptr, p(dx), p(dy), w.ptr, I(m), dtype, accumulate ? 1 : 0),
    "ql_matmul_4bit_backward",
  );
}

export interface GemmArgs {
  c: Dev;
  cType: DType;
  a: Dev;
  aType: DType;
  b: Dev;
  bType: DType;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
}

/** c [m, n] = alpha · op(a) · op(b) + beta · c */
export function gemm(ctx: Context, g: GemmArgs): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_gemm(
      ctx.ptr,
      p(g.c),
      g.cType,
      p(g.a),
      g.aType,
      p(g.b),
      g.bType,
      I(g.m),
      I(g.n),
      I(g.k),
      g.transA ? 1 : 0,
      g.transB ? 1 : 0,
      g.alpha ?? 1,
      g.beta ?? 0,
    ),
    "ql_gemm",
  );
}

export function embedding(
  ctx: Context,
  out: Dev,
  ids: Dev,
  table: Dev,
  T: number,
  V: number,
  C: number,
  dtype: DType,
  tableType: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_embedding_forward(ctx.ptr, p(out), p(ids), p(table), I(T), I(V), I(C), dtype, tableType),
    "ql_embedding_forward",
  );
}

export function embeddingBackward(ctx: Context, dtable: Dev, dout: Dev, ids: Dev, T: number, V: number, C: number, dtype: DType): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_embedding_backward(ctx.ptr, p(dtable), p(dout), p(ids), I(T), I(V), I(C), dtype),
    "ql_embedding_backward",
  );
}

export function rmsnorm(ctx: Context, out: Dev, rstd: Opt, x: Dev, weight: Dev, T: number, C: number, eps: number, dtype: DType): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_rmsnorm_forward(ctx.ptr, p(out), p(rstd), p(x), p(weight), I(T), I(C), eps, dtype),
    "ql_rmsnorm_forward",
  );
}

export function rmsnormBackward(
  ctx: Context,
  dx: Dev,
  dweight: Opt,
  dout: Dev,
  x: Dev,
  weight: Dev,
  rstd: Dev,
  T: number,
  C: number,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_rmsnorm_backward(ctx.ptr, p(dx), p(dweight), p(dout), p(x), p(weight), p(rstd), I(T), I(C), dtype),
    "ql_rmsnorm_backward",
  );
}

export function rope(
  ctx: Context,
  out: Dev,
  x: Dev,
  positions: Dev,
  invFreq: Dev,
  T: number,
  heads: number,
  D: number,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_rope_forward(ctx.ptr, p(out), p(x), p(positions), p(invFreq), I(T), I(heads), I(D), dtype),
    "ql_rope_forward",
  );
}

export function ropeBackward(
  ctx: Context,
  dx: Dev,
  dout: Dev,
  positions: Dev,
  invFreq: Dev,
  T: number,
  heads: number,
  D: number,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_rope_backward(ctx.ptr, p(dx), p(dout), p(positions), p(invFreq), I(T), I(heads), I(D), dtype),
    "ql_rope_backward",
  );
}

export interface CacheShape {
  numBlocks: number;
  blockSize: number;
  kvHeads: number;
  headDim: number;
}

export function kvCacheWrite(
  ctx: Context,
  kCache: Dev,
  vCache: Dev,
  k: Dev,
  v: Dev,
  slots: Dev,
  T: number,
  c: CacheShape,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_kv_cache_write(
      ctx.ptr,
      p(kCache),
      p(vCache),
      p(k),
      p(v),
      p(slots),
      I(T),
      I(c.numBlocks),
      I(c.blockSize),
      I(c.kvHeads),
      I(c.headDim),
      dtype,
    ),
    "ql_kv_cache_write",
  );
}

export interface PagedBatch {
  blockTables: Int32Array; // [S, maxBlocks]
  qStart: Int32Array; // [S + 1]
  ctxLens: Int32Array; // [S]
  S: number;
  maxBlocks: number;
}

export function attentionPaged(
  ctx: Context,
  out: Dev,
  q: Dev,
  kCache: Dev,
  vCache: Dev,
  b: PagedBatch,
  c: CacheShape,
  heads: number,
  scale: number,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_attention_paged(
      ctx.ptr,
      p(out),
      p(q),
      p(kCache),
      p(vCache),
      b.blockTables,
      b.qStart,
      b.ctxLens,
      I(b.S),
      I(b.maxBlocks),
      I(c.numBlocks),
      I(c.blockSize),
      I(heads),
      I(c.kvHeads),
      I(c.headDim),
      scale,
      dtype,
    ),
    "ql_attention_paged",
  );
}

export interface PackedShape {
  cuSeqlens: Int32Array; // [S + 1]
  T: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

export function attention(ctx: Context, out: Dev, lse: Dev, q: Dev, k: Dev, v: Dev, s: PackedShape, scale: number, dtype: DType): void {
  const S = s.cuSeqlens.length - 1;
  ctx.lib.check(
    ctx.lib.symbols.ql_attention_forward(
      ctx.ptr,
      p(out),
      p(lse),
      p(q),
      p(k),
      p(v),
      s.cuSeqlens,
      I(S),
      I(s.T),
      I(s.heads),
      I(s.kvHeads),
      I(s.headDim),
      scale,
      dtype,
    ),
    "ql_attention_forward",
  );
}

export function attentionBackward(
  ctx: Context,
  grads: { dq: Dev; dk: Dev; dv: Dev },
  dout: Dev,
  out: Dev,
  lse: Dev,
  q: Dev,
  k: Dev,
  v: Dev,
  s: PackedShape,
  scale: number,
  dtype: DType,
): void {
  const S = s.cuSeqlens.length - 1;
  ctx.lib.check(
    ctx.lib.symbols.ql_attention_backward(
      ctx.ptr,
      p(grads.dq),
      p(grads.dk),
      p(grads.dv),
      p(dout),
      p(out),
      p(lse),
      p(q),
      p(k),
      p(v),
      s.cuSeqlens,
      I(S),
      I(s.T),
      I(s.heads),
      I(s.kvHeads),
      I(s.headDim),
      scale,
      dtype,
    ),
    "ql_attention_backward",
  );
}

export function siluMul(ctx: Context, out: Dev, gate: Dev, up: Dev, n: number, dtype: DType): void {
  ctx.lib.check(ctx.lib.symbols.ql_silu_mul_forward(ctx.ptr, p(out), p(gate), p(up), I(n), dtype), "ql_silu_mul_forward");
}

export function siluMulBackward(ctx: Context, dgate: Dev, dup: Dev, dout: Dev, gate: Dev, up: Dev, n: number, dtype: DType): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_silu_mul_backward(ctx.ptr, p(dgate), p(dup), p(dout), p(gate), p(up), I(n), dtype),
    "ql_silu_mul_backward",
  );
}

/** out = a + alpha · b */
export function add(ctx: Context, out: Dev, a: Dev, b: Dev, n: number, dtype: DType, alpha = 1): void {
  ctx.lib.check(ctx.lib.symbols.ql_add(ctx.ptr, p(out), p(a), p(b), alpha, I(n), dtype), "ql_add");
}

export function crossEntropy(
  ctx: Context,
  losses: Dev,
  dlogits: Opt,
  logits: Dev,
  targets: Dev,
  weights: Opt,
  gradScale: number,
  T: number,
  V: number,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_cross_entropy(ctx.ptr, p(losses), p(dlogits), p(logits), p(targets), p(weights), gradScale, I(T), I(V), dtype),
    "ql_cross_entropy",
  );
}

export interface LoraShape {
  T: number;
  inF: number;
  outF: number;
  r: number;
  scale: number;
  dropout: number;
  seed: bigint;
}

/** y [T, out] += scale · (drop(x) · Aᵀ) · Bᵀ; xa [T, r] saved when given. */
export function loraForward(ctx: Context, y: Dev, xa: Opt, x: Dev, A: Dev, B: Dev, s: LoraShape, dtype: DType): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_lora_forward(
      ctx.ptr,
      p(y),
      p(xa),
      p(x),
      p(A),
      p(B),
      I(s.T),
      I(s.inF),
      I(s.outF),
      I(s.r),
      s.scale,
      s.dropout,
      s.seed,
      dtype,
    ),
    "ql_lora_forward",
  );
}

export function loraBackward(
  ctx: Context,
  dx: Opt,
  dA: Dev,
  dB: Dev,
  dy: Dev,
  x: Dev,
  xa: Dev,
  A: Dev,
  B: Dev,
  s: LoraShape,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_lora_backward(
      ctx.ptr,
      p(dx),
      p(dA),
      p(dB),
      p(dy),
      p(x),
      p(xa),
      p(A),
      p(B),
      I(s.T),
      I(s.inF),
      I(s.outF),
      I(s.r),
      s.scale,
      s.dropout,
      s.seed,
      dtype,
    ),
    "ql_lora_backward",
  );
}

export interface AdapterSlots {
  aPtrs: BigUint64Array;
  bPtrs: BigUint64Array;
  ranks: Int32Array;
  scales: Float32Array;
}

/** y [T, out] += per-row adapter products; rowAdapter[t] = index into slots or -1. */
export function loraMulti(
  ctx: Context,
  y: Dev,
  x: Dev,
  rowAdapter: Int32Array,
  slots: AdapterSlots,
  T: number,
  inF: number,
  outF: number,
  dtype: DType,
): void {
  ctx.lib.check(
    ctx.lib.symbols.ql_lora_multi_forward(
      ctx.ptr,
      p(y),
      p(x),
      rowAdapter,
      slots.aPtrs,
      slots.bPtrs,
      slots.ranks,
      slots.scales,
      I(slots.ranks.length),
      I(T),
      I(inF),
      I(outF),
      dtype,
    ),
    "ql_lora_multi_forward",
  );
}

export function copyDevice(ctx: Context, dst: Dev, src: Dev, bytes: number): void {
  ctx.lib.check(ctx.lib.symbols.ql_copy_device(ctx.ptr, p(dst), p(src), I(bytes)), "ql_copy_device");
}

export function fillZero(ctx: Context, dst: Dev, bytes: number): void {
  ctx.lib.check(ctx.lib.symbols.ql_fill_zero(ctx.ptr, p(dst), I(bytes)), "ql_fill_zero");
}

export function convert(ctx: Context, out: Dev, outType: DType, input: Dev, inType: DType, n: number): void {
  ctx.lib.check(ctx.lib.symbols.ql_convert(ctx.ptr, p(out), outType, p(input), inType, I(n)), "ql_convert");
}

export function sumSquares(ctx: Context, out: Dev, g: Dev, n: number): void {
  ctx.lib.check(ctx.lib.symbols.ql_sum_squares(ctx.ptr, p(out), p(g), I(n)), "ql_sum_squares");
}

export function scale(ctx: Context, x: Dev, alpha: number, n: number): void {
  ctx.lib.check(ctx.lib.symbols.ql_scale(ctx.ptr, p(x), alpha, I(n)), "ql_scale");
}

export function topk(ctx: Context, ids: Dev, vals: Dev, logits: Dev, B: number, V: number, k: number, dtype: DType): void {
  ctx.lib.check(ctx.lib.symbols.ql_topk(ctx.ptr, p(ids), p(vals), p(logits), I(B), I(V), I(k), dtype), "ql_topk");
}
