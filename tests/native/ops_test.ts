// ops_test.ts — the transformer ops (embedding, RMSNorm, RoPE, KV cache, paged and training
// attention, SwiGLU, add, cross-entropy, sum of squares, scale, top-k) on every backend, against
// the float64 references of reference.ts, with every backward checked by central finite
// differences of the reference forward.
//
// Tolerances (|got − want| ≤ tol · (|want| + rms(want)), see assertClose):
//   F32 forward ops 1e-5 (attention 2e-5), F32 backward vs finite differences 1e-4 (the
//   numerical gradient itself is accurate to ~1e-8 here); BF16 2e-2 for values that went
//   through one or two bf16 roundings (inputs are bf16-exact, so only outputs round).
import assert from "node:assert/strict";
import { openContext, testEachBackend } from "./backends.ts";
import { Rng } from "./rng.ts";
import * as ref from "./reference.ts";
import { type Context, type DeviceBuffer, DType } from "../../server/ffi/tensor.ts";

type Act = typeof DType.F32 | typeof DType.BF16;
const ACTS: Act[] = [DType.F32, DType.BF16];
const NAME: Record<Act, string> = { [DType.F32]: "f32", [DType.BF16]: "bf16" };
/** Forward tolerance per dtype. */
const FWD: Record<Act, number> = { [DType.F32]: 1e-5, [DType.BF16]: 2e-2 };
/** Backward (vs finite differences / analytic float64) tolerance per dtype. */
const BWD: Record<Act, number> = { [DType.F32]: 1e-4, [DType.BF16]: 3e-2 };

// ---------------------------------------------------------------- helpers

/** Values as the device stores them in dtype (f32 or bf16 rounding), as float64. */
function rounded(x: ArrayLike<number>, dtype: Act): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = dtype === DType.F32 ? Math.fround(x[i]) : ref.roundBf16(x[i]);
  return out;
}

function randn(rng: Rng, n: number, dtype: Act, std = 1): Float64Array {
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal() * std;
  return rounded(x, dtype);
}

function upload(ctx: Context, x: ArrayLike<number>, dtype: Act): DeviceBuffer {
  if (dtype === DType.F32) return ctx.upload(Float32Array.from(x));
  return ctx.upload(Uint16Array.from(x as ArrayLike<number>, (v) => ref.toBf16Bits(v)));
}

function download(buf: DeviceBuffer, dtype: Act, n: number): Float64Array {
  if (dtype === DType.F32) return Float64Array.from(buf.readF32(0, n));
  return Float64Array.from(buf.readU16(0, n), (h) => ref.fromBf16Bits(h));
}

function rms(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s / Math.max(1, x.length));
}

/** Elementwise |got − want| ≤ tol · (|want| + rms(want)). */
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  const scale = rms(want) + 1e-30;
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / (Math.abs(want[i]) + scale);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  assert.ok(worst <= tol, `${label}: error ${worst.toExponential(2)} > ${tol} at ${at}: got ${got[at]}, want ${want[at]}`);
}

function add(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (v, i) => v + b[i]);
}

function lastError(ctx: Context): string {
  const p = ctx.lib.symbols.ql_last_error();
  return p === null ? "" : new Deno.UnsafePointerView(p).getCString();
}

/** Asserts an invalid-argument status with a message mentioning `fragment`. */
function assertInvalid(ctx: Context, status: number, fragment: string): void {
  assert.equal(status, 1, `expected QL_E_INVALID, got ${status}`);
  const msg = lastError(ctx);
  assert.ok(msg.includes(fragment), `message "${msg}" should mention "${fragment}"`);
}

const big = BigInt;

// ---------------------------------------------------------------- embedding

testEachBackend("embedding forward copies (and converts) rows; bad ids are rejected", (ctx) => {
  const rng = new Rng(1);
  const T = 13, V = 37, C = 19;
  const ids = Int32Array.from({ length: T }, () => rng.int(0, V));
  ids[3] = ids[7];
  using idsBuf = ctx.upload(ids);
  for (const dtype of ACTS) {
    for (const tdtype of ACTS) {
      const table = randn(rng, V * C, tdtype);
      using tb = upload(ctx, table, tdtype);
      using out = ctx.alloc(T * C * 4);
      ctx.lib.check(
        ctx.lib.symbols.ql_embedding_forward(ctx.ptr, out.ptr, idsBuf.ptr, tb.ptr, big(T), big(V), big(C), dtype, tdtype),
        "emb",
      );
      // Exact: a copy, or one rounding of a bf16-exact/f32 value.
      assert.deepEqual(download(out, dtype, T * C), rounded(ref.embeddingForward(ids, table, C), dtype), `${NAME[dtype]}<-${NAME[tdtype]}`);
    }
  }
  // An id outside [0, V) fails before anything is written.
  const bad = ids.slice();
  bad[5] = V;
  using badBuf = ctx.upload(bad);
  const table = randn(rng, V * C, DType.F32);
  using tb = upload(ctx, table, DType.F32);
  using out = ctx.upload(new Float32Array(T * C).fill(7));
  assertInvalid(ctx, ctx.lib.symbols.ql_embedding_forward(ctx.ptr, out.ptr, badBuf.ptr, tb.ptr, big(T), big(V), big(C), 0, 0), "ids");
  assert.ok(out.readF32().every((v) => v === 7), "nothing written");
  bad[5] = -1;
  using badBuf2 = ctx.upload(bad);
  assertInvalid(ctx, ctx.lib.symbols.ql_embedding_forward(ctx.ptr, out.ptr, badBuf2.ptr, tb.ptr, big(T), big(V), big(C), 0, 0), "ids");
});

testEachBackend("embedding backward scatter-adds into dtable (+=)", (ctx) => {
  const rng = new Rng(2);
  const T = 29, V = 11, C = 300; // repeated ids; C spans several column chunks
  const ids = Int32Array.from({ length: T }, () => rng.int(0, V));
  using idsBuf = ctx.upload(ids);
  for (const dtype of ACTS) {
    const dout = randn(rng, T * C, dtype);
    const init = randn(rng, V * C, DType.F32);
    using dt = upload(ctx, init, DType.F32);
    using db = upload(ctx, dout, dtype);
    ctx.lib.check(ctx.lib.symbols.ql_embedding_backward(ctx.ptr, dt.ptr, db.ptr, idsBuf.ptr, big(T), big(V), big(C), dtype), "emb bwd");
    assertClose(download(dt, DType.F32, V * C), ref.embeddingBackward(init, dout, ids, C), 1e-6, NAME[dtype]);
  }
});

// ---------------------------------------------------------------- RMSNorm

testEachBackend("rmsnorm forward matches the reference (rstd saved)", (ctx) => {
  const rng = new Rng(3);
  for (const [T, C] of [[7, 33], [5, 256], [1, 3]]) {
    for (const dtype of ACTS) {
      const x = randn(rng, T * C, dtype, 2);
      const w = rounded(Float64Array.from({ length: C }, () => 1 + 0.3 * rng.normal()), DType.F32);
      using xb = upload(ctx, x, dtype);
      using wb = upload(ctx, w, DType.F32);
      using out = ctx.alloc(T * C * 4);
      using rstd = ctx.alloc(T * 4);
      ctx.lib.check(ctx.lib.symbols.ql_rmsnorm_forward(ctx.ptr, out.ptr, rstd.ptr, xb.ptr, wb.ptr, big(T), big(C), 1e-5, dtype), "rms");
      const want = ref.rmsnormForward(x, w, T, C, 1e-5);
      assertClose(download(out, dtype, T * C), want.out, FWD[dtype], `out ${T}x${C} ${NAME[dtype]}`);
      assertClose(download(rstd, DType.F32, T), want.rstd, 1e-5, `rstd ${T}x${C} ${NAME[dtype]}`);
      // rstd is nullable.
      ctx.lib.check(ctx.lib.symbols.ql_rmsnorm_forward(ctx.ptr, out.ptr, null, xb.ptr, wb.ptr, big(T), big(C), 1e-5, dtype), "rms");
      assertClose(download(out, dtype, T * C), want.out, FWD[dtype], `out (no rstd)`);
    }
  }
});

testEachBackend("rmsnorm backward (+= into dx and dweight) matches finite differences", (ctx) => {
  const rng = new Rng(4);
  const eps = 1e-5;
  for (const [T, C] of [[5, 13], [3, 40]]) {
    for (const dtype of ACTS) {
      const x = randn(rng, T * C, dtype);
      const w = rounded(Float64Array.from({ length: C }, () => 1 + 0.3 * rng.normal()), DType.F32);
      const dout = randn(rng, T * C, dtype);
      const dx0 = randn(rng, T * C, dtype, 0.1);
      const dw0 = randn(rng, C, DType.F32, 0.1);
      const gx = ref.numericalGradient((xx) => ref.rmsnormForward(xx, w, T, C, eps).out, x, dout);
      const gw = ref.numericalGradient((ww) => ref.rmsnormForward(x, ww, T, C, eps).out, w, dout);
      using xb = upload(ctx, x, dtype);
      using wb = upload(ctx, w, DType.F32);
      using db = upload(ctx, dout, dtype);
      using rstd = upload(ctx, ref.rmsnormForward(x, w, T, C, eps).rstd, DType.F32);
      using dx = upload(ctx, dx0, dtype);
      using dw = upload(ctx, dw0, DType.F32);
      ctx.lib.check(
        ctx.lib.symbols.ql_rmsnorm_backward(ctx.ptr, dx.ptr, dw.ptr, db.ptr, xb.ptr, wb.ptr, rstd.ptr, big(T), big(C), dtype),
        "rms bwd",
      );
      const label = `${T}x${C} ${NAME[dtype]}`;
      assertClose(download(dx, dtype, T * C), add(dx0, gx), BWD[dtype], `dx ${label}`);
      assertClose(download(dw, DType.F32, C), add(dw0, gw), dtype === DType.F32 ? 1e-4 : 1e-3, `dweight ${label}`);
      // dweight nullable: dx accumulates a second time.
      ctx.lib.check(
        ctx.lib.symbols.ql_rmsnorm_backward(ctx.ptr, dx.ptr, null, db.ptr, xb.ptr, wb.ptr, rstd.ptr, big(T), big(C), dtype),
        "rms bwd",
      );
      assertClose(download(dx, dtype, T * C), add(add(dx0, gx), gx), BWD[dtype], `dx twice ${label}`);
    }
  }
});

// ---------------------------------------------------------------- RoPE

function invFreq(D: number, theta = 10000): Float32Array {
  return Float32Array.from({ length: D / 2 }, (_, i) => 1 / Math.pow(theta, (2 * i) / D));
}

testEachBackend("rope forward matches the reference, in place too; backward is its transpose", (ctx) => {
  const rng = new Rng(5);
  for (const [T, Hn, D] of [[6, 3, 10], [4, 2, 64], [3, 1, 2]]) {
    const positions = Int32Array.from({ length: T }, () => rng.int(0, 5000));
    using pos = ctx.upload(positions);
    const f = invFreq(D);
    using fb = ctx.upload(f);
    for (const dtype of ACTS) {
      const n = T * Hn * D;
      const x = randn(rng, n, dtype);
      using xb = upload(ctx, x, dtype);
      using out = ctx.alloc(n * 4);
      ctx.lib.check(ctx.lib.symbols.ql_rope_forward(ctx.ptr, out.ptr, xb.ptr, pos.ptr, fb.ptr, big(T), big(Hn), big(D), dtype), "rope");
      const want = ref.ropeForward(x, positions, f, T, Hn, D);
      const label = `${T}x${Hn}x${D} ${NAME[dtype]}`;
      assertClose(download(out, dtype, n), want, FWD[dtype], `fwd ${label}`);
      // In place: out == x.
      ctx.lib.check(ctx.lib.symbols.ql_rope_forward(ctx.ptr, xb.ptr, xb.ptr, pos.ptr, fb.ptr, big(T), big(Hn), big(D), dtype), "rope");
      assertClose(download(xb, dtype, n), want, FWD[dtype], `in place ${label}`);
      // Backward = transpose rotation: checked by finite differences of the (linear) forward.
      const dout = randn(rng, n, dtype);
      const g = ref.numericalGradient((xx) => ref.ropeForward(xx, positions, f, T, Hn, D), x, dout);
      using db = upload(ctx, dout, dtype);
      using dx = ctx.alloc(n * 4);
      ctx.lib.check(ctx.lib.symbols.ql_rope_backward(ctx.ptr, dx.ptr, db.ptr, pos.ptr, fb.ptr, big(T), big(Hn), big(D), dtype), "rope bwd");
      assertClose(download(dx, dtype, n), g, BWD[dtype], `bwd ${label}`);
      // dx may equal dout.
      ctx.lib.check(ctx.lib.symbols.ql_rope_backward(ctx.ptr, db.ptr, db.ptr, pos.ptr, fb.ptr, big(T), big(Hn), big(D), dtype), "rope bwd");
      assertClose(download(db, dtype, n), g, BWD[dtype], `bwd in place ${label}`);
    }
  }
});

// ---------------------------------------------------------------- SwiGLU, add

testEachBackend("silu_mul forward/backward match the reference and finite differences", (ctx) => {
  const rng = new Rng(6);
  for (const n of [1003, 5, 40000]) {
    for (const dtype of ACTS) {
      const gate = randn(rng, n, dtype, 3), up = randn(rng, n, dtype);
      if (n > 10) {
        gate[0] = 100;
        gate[1] = -100;
        gate[2] = 0;
      }
      using gb = upload(ctx, gate, dtype);
      using ub = upload(ctx, up, dtype);
      using out = ctx.alloc(n * 4);
      ctx.lib.check(ctx.lib.symbols.ql_silu_mul_forward(ctx.ptr, out.ptr, gb.ptr, ub.ptr, big(n), dtype), "silu");
      const want = ref.siluMulForward(gate, up);
      assertClose(download(out, dtype, n), want, FWD[dtype], `fwd ${n} ${NAME[dtype]}`);

      const dout = randn(rng, n, dtype);
      using db = upload(ctx, dout, dtype);
      using dg = ctx.alloc(n * 4);
      using du = ctx.alloc(n * 4);
      ctx.lib.check(ctx.lib.symbols.ql_silu_mul_backward(ctx.ptr, dg.ptr, du.ptr, db.ptr, gb.ptr, ub.ptr, big(n), dtype), "silu bwd");
      if (n <= 1003) {
        // Elementwise: the numerical gradient of Σ dout ⊙ f needs one perturbation per element.
        const gg = ref.numericalGradient((g) => ref.siluMulForward(g, up), gate, dout);
        const gu = ref.numericalGradient((u) => ref.siluMulForward(gate, u), up, dout);
        assertClose(download(dg, dtype, n), gg, BWD[dtype], `dgate ${n} ${NAME[dtype]}`);
        assertClose(download(du, dtype, n), gu, BWD[dtype], `dup ${n} ${NAME[dtype]}`);
      }
      // out may equal gate.
      ctx.lib.check(ctx.lib.symbols.ql_silu_mul_forward(ctx.ptr, gb.ptr, gb.ptr, ub.ptr, big(n), dtype), "silu");
      assertClose(download(gb, dtype, n), want, FWD[dtype], `in place ${n} ${NAME[dtype]}`);
    }
  }
});

testEachBackend("add computes a + alpha·b, in place too", (ctx) => {
  const rng = new Rng(7);
  for (const n of [1, 17, 70001]) {
    for (const dtype of ACTS) {
      const a = randn(rng, n, dtype), b = randn(rng, n, dtype);
      using ab = upload(ctx, a, dtype);
      using bb = upload(ctx, b, dtype);
      using out = ctx.alloc(n * 4);
      const want = Float64Array.from(a, (v, i) => v + Math.fround(-0.75) * b[i]);
      ctx.lib.check(ctx.lib.symbols.ql_add(ctx.ptr, out.ptr, ab.ptr, bb.ptr, -0.75, big(n), dtype), "add");
      assertClose(download(out, dtype, n), want, FWD[dtype], `${n} ${NAME[dtype]}`);
      ctx.lib.check(ctx.lib.symbols.ql_add(ctx.ptr, bb.ptr, ab.ptr, bb.ptr, -0.75, big(n), dtype), "add");
      assertClose(download(bb, dtype, n), want, FWD[dtype], `out = b ${n} ${NAME[dtype]}`);
    }
  }
});

// ---------------------------------------------------------------- cross-entropy

testEachBackend("cross_entropy: losses, dlogits (in place too), ignored rows, weights", (ctx) => {
  const rng = new Rng(8);
  for (const [T, V] of [[9, 301], [3, 512], [2, 5]]) {
    for (const dtype of ACTS) {
      const logits = randn(rng, T * V, dtype, 3);
      if (V > 100) logits[V - 1] = 40; // a dominant logit
      const targets = Int32Array.from({ length: T }, () => rng.int(0, V));
      targets[1 % T] = -1;
      targets[0] = V - 1;
      const weights = Float32Array.from({ length: T }, () => 0.5 + rng.next());
      const gs = 0.25;
      using lb = upload(ctx, logits, dtype);
      using tb = ctx.upload(targets);
      using wb = ctx.upload(weights);
      using losses = ctx.alloc(T * 4);
      using dl = ctx.alloc(T * V * 4);
      ctx.lib.check(ctx.lib.symbols.ql_cross_entropy(ctx.ptr, losses.ptr, dl.ptr, lb.ptr, tb.ptr, wb.ptr, gs, big(T), big(V), dtype), "ce");
      const want = ref.crossEntropy(logits, targets, weights, gs, T, V);
      const label = `${T}x${V} ${NAME[dtype]}`;
      // Losses are f32 computed from bf16-exact logits: tight for both dtypes.
      assertClose(download(losses, DType.F32, T), want.losses, 1e-5, `losses ${label}`);
      assertClose(download(dl, dtype, T * V), want.dlogits, FWD[dtype] * 10, `dlogits ${label}`);
      // dlogits = grad_scale · ∂(Σ losses)/∂logits, by finite differences (small case only).
      if (T * V <= 600) {
        const g = ref.numericalGradient(
          (x) => ref.crossEntropy(x, targets, weights, gs, T, V).losses,
          logits,
          new Float64Array(T).fill(gs),
        );
        assertClose(download(dl, dtype, T * V), g, BWD[dtype], `dlogits vs finite differences ${label}`);
      }
      // weights and dlogits nullable.
      ctx.lib.check(ctx.lib.symbols.ql_cross_entropy(ctx.ptr, losses.ptr, null, lb.ptr, tb.ptr, null, gs, big(T), big(V), dtype), "ce");
      assertClose(download(losses, DType.F32, T), ref.crossEntropy(logits, targets, null, gs, T, V).losses, 1e-5, `unweighted ${label}`);
      // dlogits may equal logits.
      ctx.lib.check(ctx.lib.symbols.ql_cross_entropy(ctx.ptr, losses.ptr, lb.ptr, lb.ptr, tb.ptr, wb.ptr, gs, big(T), big(V), dtype), "ce");
      assertClose(download(lb, dtype, T * V), want.dlogits, FWD[dtype] * 10, `in place ${label}`);
      assertClose(download(losses, DType.F32, T), want.losses, 1e-5, `in place losses ${label}`);
    }
  }
  // A target >= V is rejected.
  using lb = upload(ctx, new Float64Array(8), DType.F32);
  using tb = ctx.upload(Int32Array.from([0, 4]));
  using losses = ctx.alloc(8);
  assertInvalid(ctx, ctx.lib.symbols.ql_cross_entropy(ctx.ptr, losses.ptr, null, lb.ptr, tb.ptr, null, 1, 2n, 4n, 0), "targets");
});

// ---------------------------------------------------------------- reductions, top-k

testEachBackend("sum_squares accumulates, scale multiplies", (ctx) => {
  const rng = new Rng(9);
  for (const n of [1, 15, 100003]) {
    const g = rounded(rng.normalF32(n), DType.F32);
    using gb = upload(ctx, g, DType.F32);
    using out = ctx.upload(Float32Array.from([2.5]));
    ctx.lib.check(ctx.lib.symbols.ql_sum_squares(ctx.ptr, out.ptr, gb.ptr, big(n)), "ss");
    let want = 2.5;
    for (const v of g) want += v * v;
    assertClose(out.readF32(), [want], 1e-6, `sum_squares ${n}`);
    ctx.lib.check(ctx.lib.symbols.ql_scale(ctx.ptr, gb.ptr, -0.3, big(n)), "scale");
    assertClose(download(gb, DType.F32, n), g.map((v) => v * Math.fround(-0.3)), 1e-7, `scale ${n}`);
  }
});

testEachBackend("topk returns the k largest in descending order, ties by lower id", (ctx) => {
  const rng = new Rng(10);
  for (const dtype of ACTS) {
    for (const [B, V, k] of [[3, 500, 7], [2, 64, 1], [1, 33, 33], [4, 1000, 50]]) {
      // Small integers repeat (ties) and are exact in bf16.
      const logits = Float64Array.from({ length: B * V }, () => rng.int(-20, 20) / 2);
      using lb = upload(ctx, logits, dtype);
      using ids = ctx.alloc(B * k * 4);
      using vals = ctx.alloc(B * k * 4);
      ctx.lib.check(ctx.lib.symbols.ql_topk(ctx.ptr, ids.ptr, vals.ptr, lb.ptr, big(B), big(V), big(k), dtype), "topk");
      const want = ref.topk(logits, B, V, k);
      assert.deepEqual(Array.from(ids.readI32(0, B * k)), want.ids, `ids ${B}x${V} k=${k} ${NAME[dtype]}`);
      assert.deepEqual(Array.from(vals.readF32(0, B * k)), want.vals, `vals ${B}x${V} k=${k} ${NAME[dtype]}`);
    }
  }
});

// ---------------------------------------------------------------- KV cache + paged attention

interface PagedSeq {
  ctxLen: number;
  qLen: number;
}

/**
 * Builds a paged cache for the sequences (shuffled, non-contiguous blocks), writes every token's
 * K/V with ql_kv_cache_write, runs ql_attention_paged on the batch and on each sequence alone, and
 * compares with the reference.
 */
function checkPaged(
  ctx: Context,
  rng: Rng,
  seqs: PagedSeq[],
  H: number,
  Hkv: number,
  D: number,
  blockSize: number,
  dtype: Act,
  backend: string,
) {
  const S = seqs.length;
  const maxBlocks = Math.max(...seqs.map((s) => Math.ceil(s.ctxLen / blockSize))) + 1;
  const used = seqs.reduce((a, s) => a + Math.ceil(s.ctxLen / blockSize), 0);
  const numBlocks = used + 3;
  const perm = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = numBlocks - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const tables = new Int32Array(S * maxBlocks).fill(-1); // unused entries are never read
  let next = 0;
  for (let s = 0; s < S; s++) for (let b = 0; b < Math.ceil(seqs[s].ctxLen / blockSize); b++) tables[s * maxBlocks + b] = perm[next++];

  const row = Hkv * D;
  const cacheElems = numBlocks * blockSize * row;
  using kc = upload(ctx, new Float64Array(cacheElems).fill(9), dtype);
  using vc = upload(ctx, new Float64Array(cacheElems).fill(9), dtype);
  // Per sequence K/V [ctxLen, Hkv, D] and Q [qLen, H, D]; all tokens written in one call.
  const ks: Float64Array[] = [], vs: Float64Array[] = [], qs: Float64Array[] = [];
  const allK: number[] = [], allV: number[] = [], slots: number[] = [];
  for (let s = 0; s < S; s++) {
    const { ctxLen, qLen } = seqs[s];
    ks.push(randn(rng, ctxLen * row, dtype));
    vs.push(randn(rng, ctxLen * row, dtype));
    qs.push(randn(rng, qLen * H * D, dtype));
    for (let j = 0; j < ctxLen; j++) {
      slots.push(tables[s * maxBlocks + Math.floor(j / blockSize)] * blockSize + (j % blockSize));
      for (let e = 0; e < row; e++) {
        allK.push(ks[s][j * row + e]);
        allV.push(vs[s][j * row + e]);
      }
    }
  }
  // One extra row with slot -1 is skipped.
  slots.push(-1);
  for (let e = 0; e < row; e++) {
    allK.push(123);
    allV.push(123);
  }
  const nTok = slots.length;
  using kb = upload(ctx, allK, dtype);
  using vb = upload(ctx, allV, dtype);
  using sb = ctx.upload(Int32Array.from(slots));
  ctx.lib.check(
    ctx.lib.symbols.ql_kv_cache_write(
      ctx.ptr,
      kc.ptr,
      vc.ptr,
      kb.ptr,
      vb.ptr,
      sb.ptr,
      big(nTok),
      big(numBlocks),
      big(blockSize),
      big(Hkv),
      big(D),
      dtype,
    ),
    "kv write",
  );
  // The cache holds exactly the written rows; untouched slots keep their old contents.
  const kcHost = download(kc, dtype, cacheElems);
  const expectK = new Float64Array(cacheElems).fill(9);
  for (let t = 0; t < nTok - 1; t++) for (let e = 0; e < row; e++) expectK[slots[t] * row + e] = allK[t * row + e];
  assert.deepEqual(kcHost, expectK, "k_cache contents");

  const qStart = new Int32Array(S + 1);
  for (let s = 0; s < S; s++) qStart[s + 1] = qStart[s] + seqs[s].qLen;
  const T = qStart[S];
  const qAll = new Float64Array(T * H * D);
  for (let s = 0; s < S; s++) qAll.set(qs[s], qStart[s] * H * D);
  const ctxLens = Int32Array.from(seqs, (s) => s.ctxLen);
  using qb = upload(ctx, qAll, dtype);
  using out = ctx.alloc(T * H * D * 4);
  const scale = 1 / Math.sqrt(D);
  ctx.lib.check(
    ctx.lib.symbols.ql_attention_paged(
      ctx.ptr,
      out.ptr,
      qb.ptr,
      kc.ptr,
      vc.ptr,
      tables,
      qStart,
      ctxLens,
      big(S),
      big(maxBlocks),
      big(numBlocks),
      big(blockSize),
      big(H),
      big(Hkv),
      big(D),
      scale,
      dtype,
    ),
    "paged",
  );
  const batched = download(out, dtype, T * H * D);
  for (let s = 0; s < S; s++) {
    const { ctxLen, qLen } = seqs[s];
    const label = `seq ${s} (ctx ${ctxLen}, q ${qLen}) H${H}/${Hkv} D${D} bs${blockSize} ${NAME[dtype]}`;
    const want = ref.attendSequence(qs[s], ks[s], vs[s], qLen, ctxLen, H, Hkv, D, Math.fround(scale));
    const got = batched.subarray(qStart[s] * H * D, qStart[s + 1] * H * D);
    assertClose(got, want.out, dtype === DType.F32 ? 2e-5 : FWD[dtype], label);
    if (qLen === 0) continue;
    // The same sequence alone gives the same rows.
    using qa = upload(ctx, qs[s], dtype);
    using oa = ctx.alloc(qLen * H * D * 4);
    ctx.lib.check(
      ctx.lib.symbols.ql_attention_paged(
        ctx.ptr,
        oa.ptr,
        qa.ptr,
        kc.ptr,
        vc.ptr,
        tables.slice(s * maxBlocks, (s + 1) * maxBlocks),
        Int32Array.from([0, qLen]),
        Int32Array.from([ctxLen]),
        1n,
        big(maxBlocks),
        big(numBlocks),
        big(blockSize),
        big(H),
        big(Hkv),
        big(D),
        scale,
        dtype,
      ),
      "paged alone",
    );
    const alone = download(oa, dtype, qLen * H * D);
    if (backend === "cpu") assert.deepEqual(Array.from(got), Array.from(alone), `alone == batched: ${label}`);
    else assertClose(got, alone, dtype === DType.F32 ? 1e-6 : 1e-2, `alone ≈ batched: ${label}`);
  }
}

testEachBackend("paged attention: mixed prefill/decode batch equals each sequence alone and the reference", (ctx, backend) => {
  const rng = new Rng(11);
  for (const dtype of ACTS) {
    checkPaged(
      ctx,
      rng,
      [{ ctxLen: 37, qLen: 1 }, { ctxLen: 5, qLen: 5 }, { ctxLen: 70, qLen: 3 }, { ctxLen: 16, qLen: 1 }, { ctxLen: 1, qLen: 1 }, {
        ctxLen: 9,
        qLen: 0,
      }],
      4,
      2,
      16,
      8,
      dtype,
      backend,
    );
    // Head dim not a multiple of 8, MHA, odd block size.
    checkPaged(ctx, rng, [{ ctxLen: 13, qLen: 13 }, { ctxLen: 21, qLen: 2 }, { ctxLen: 6, qLen: 1 }], 3, 3, 12, 5, dtype, backend);
    // Long decode (several key tiles), GQA 8:1, D 64.
    checkPaged(ctx, rng, [{ ctxLen: 200, qLen: 1 }, { ctxLen: 131, qLen: 1 }, { ctxLen: 67, qLen: 4 }], 8, 1, 64, 16, dtype, backend);
    // Long contexts (keys split across work items and merged), decode and short prefill.
    checkPaged(ctx, rng, [{ ctxLen: 1100, qLen: 1 }, { ctxLen: 600, qLen: 3 }, { ctxLen: 513, qLen: 6 }], 4, 2, 16, 32, dtype, backend);
  }
});

testEachBackend("kv_cache_write and attention_paged reject bad arguments", (ctx) => {
  const s = ctx.lib.symbols;
  const H = 2, Hkv = 1, D = 8, bs = 4, nb = 2;
  using kc = ctx.alloc(nb * bs * Hkv * D * 4, true);
  using vc = ctx.alloc(nb * bs * Hkv * D * 4, true);
  using k = ctx.alloc(2 * Hkv * D * 4, true);
  using slots = ctx.upload(Int32Array.from([0, nb * bs]));
  assertInvalid(
    ctx,
    s.ql_kv_cache_write(ctx.ptr, kc.ptr, vc.ptr, k.ptr, k.ptr, slots.ptr, 2n, big(nb), big(bs), big(Hkv), big(D), 0),
    "slots",
  );
  assertInvalid(
    ctx,
    s.ql_kv_cache_write(ctx.ptr, null, vc.ptr, k.ptr, k.ptr, slots.ptr, 2n, big(nb), big(bs), big(Hkv), big(D), 0),
    "k_cache",
  );
  using q = ctx.alloc(H * D * 4, true);
  using out = ctx.alloc(H * D * 4);
  const paged = (tables: Int32Array, qStart: Int32Array, lens: Int32Array, Hq = H, dtype = 0, Hk = Hkv) =>
    s.ql_attention_paged(
      ctx.ptr,
      out.ptr,
      q.ptr,
      kc.ptr,
      vc.ptr,
      tables,
      qStart,
      lens,
      1n,
      2n,
      big(nb),
      big(bs),
      big(Hq),
      big(Hk),
      big(D),
      0.5,
      dtype,
    );
  assert.equal(paged(Int32Array.from([1, 0]), Int32Array.from([0, 1]), Int32Array.from([6])), 0);
  assertInvalid(ctx, paged(Int32Array.from([1, nb]), Int32Array.from([0, 1]), Int32Array.from([6])), "block_tables");
  assertInvalid(ctx, paged(Int32Array.from([-1, 0]), Int32Array.from([0, 1]), Int32Array.from([3])), "block_tables");
  assertInvalid(ctx, paged(Int32Array.from([0, 1]), Int32Array.from([0, 1]), Int32Array.from([9])), "ctx_len");
  assertInvalid(ctx, paged(Int32Array.from([0, 1]), Int32Array.from([0, 2]), Int32Array.from([1])), "queries");
  assertInvalid(ctx, paged(Int32Array.from([0, 1]), Int32Array.from([0, 1]), Int32Array.from([2]), 3, 0, 2), "multiple of Hkv");
  assertInvalid(ctx, paged(Int32Array.from([0, 1]), Int32Array.from([0, 1]), Int32Array.from([2]), H, 7), "dtype");
});

// ---------------------------------------------------------------- training attention

function runAttentionForward(
  ctx: Context,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  cu: Int32Array,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
  dtype: Act,
) {
  const T = cu[cu.length - 1];
  using qb = upload(ctx, q, dtype);
  using kb = upload(ctx, k, dtype);
  using vb = upload(ctx, v, dtype);
  using out = ctx.alloc(T * H * D * 4);
  using lse = ctx.alloc(T * H * 4);
  ctx.lib.check(
    ctx.lib.symbols.ql_attention_forward(
      ctx.ptr,
      out.ptr,
      lse.ptr,
      qb.ptr,
      kb.ptr,
      vb.ptr,
      cu,
      big(cu.length - 1),
      big(T),
      big(H),
      big(Hkv),
      big(D),
      scale,
      dtype,
    ),
    "attn fwd",
  );
  return { out: download(out, dtype, T * H * D), lse: download(lse, DType.F32, T * H) };
}

function runAttentionBackward(
  ctx: Context,
  dout: Float64Array,
  fwd: { out: Float64Array; lse: Float64Array },
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  cu: Int32Array,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
  dtype: Act,
) {
  const T = cu[cu.length - 1];
  using qb = upload(ctx, q, dtype);
  using kb = upload(ctx, k, dtype);
  using vb = upload(ctx, v, dtype);
  using ob = upload(ctx, fwd.out, dtype);
  using lb = upload(ctx, fwd.lse, DType.F32);
  using db = upload(ctx, dout, dtype);
  using dq = upload(ctx, new Float64Array(T * H * D).fill(5), dtype); // overwritten, not +=
  using dk = upload(ctx, new Float64Array(T * Hkv * D).fill(5), dtype);
  using dv = upload(ctx, new Float64Array(T * Hkv * D).fill(5), dtype);
  ctx.lib.check(
    ctx.lib.symbols.ql_attention_backward(
      ctx.ptr,
      dq.ptr,
      dk.ptr,
      dv.ptr,
      db.ptr,
      ob.ptr,
      lb.ptr,
      qb.ptr,
      kb.ptr,
      vb.ptr,
      cu,
      big(cu.length - 1),
      big(T),
      big(H),
      big(Hkv),
      big(D),
      scale,
      dtype,
    ),
    "attn bwd",
  );
  return { dq: download(dq, dtype, T * H * D), dk: download(dk, dtype, T * Hkv * D), dv: download(dv, dtype, T * Hkv * D) };
}

testEachBackend("attention forward (packed varlen, causal, GQA) matches the reference, lse too", (ctx) => {
  const rng = new Rng(12);
  const cases: [number[], number, number, number][] = [
    [[0, 5, 5, 17, 18, 30], 4, 2, 8],
    [[0, 9, 20], 3, 1, 12],
    [[0, 150, 157], 2, 1, 16], // several key and query tiles
    [[0, 70], 16, 2, 64],
  ];
  for (const [cuArr, H, Hkv, D] of cases) {
    const cu = Int32Array.from(cuArr);
    const T = cu[cu.length - 1];
    for (const dtype of ACTS) {
      const q = randn(rng, T * H * D, dtype), k = randn(rng, T * Hkv * D, dtype), v = randn(rng, T * Hkv * D, dtype);
      const scale = Math.fround(1 / Math.sqrt(D));
      const got = runAttentionForward(ctx, q, k, v, cu, H, Hkv, D, scale, dtype);
      const want = ref.attentionForward(q, k, v, cu, H, Hkv, D, scale);
      const label = `cu ${cuArr} H${H}/${Hkv} D${D} ${NAME[dtype]}`;
      assertClose(got.out, want.out, dtype === DType.F32 ? 2e-5 : FWD[dtype], `out ${label}`);
      // lse: absolute error matters (it is a log); 1e-5 relative to its magnitude.
      assertClose(got.lse, want.lse, 1e-5, `lse ${label}`);
    }
  }
});

testEachBackend("attention backward matches finite differences and the analytic float64 backward", (ctx) => {
  const rng = new Rng(13);
  // Small case: finite differences of the reference forward w.r.t. q, k, v.
  {
    const cu = Int32Array.from([0, 4, 9, 9, 10]);
    const H = 4, Hkv = 2, D = 6, T = 10;
    for (const dtype of ACTS) {
      const q = randn(rng, T * H * D, dtype), k = randn(rng, T * Hkv * D, dtype), v = randn(rng, T * Hkv * D, dtype);
      const dout = randn(rng, T * H * D, dtype);
      const scale = Math.fround(0.7);
      const fwd = runAttentionForward(ctx, q, k, v, cu, H, Hkv, D, scale, dtype);
      const got = runAttentionBackward(ctx, dout, fwd, q, k, v, cu, H, Hkv, D, scale, dtype);
      const f = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => ref.attentionForward(qq, kk, vv, cu, H, Hkv, D, scale).out;
      const label = `small ${NAME[dtype]}`;
      assertClose(got.dq, ref.numericalGradient((x) => f(x, k, v), q, dout), BWD[dtype], `dq ${label}`);
      assertClose(got.dk, ref.numericalGradient((x) => f(q, x, v), k, dout), BWD[dtype], `dk ${label}`);
      assertClose(got.dv, ref.numericalGradient((x) => f(q, k, x), v, dout), BWD[dtype], `dv ${label}`);
    }
  }
  // Larger cases (several tiles, D not a multiple of 8): the analytic float64 backward.
  const cases: [number[], number, number, number][] = [
    [[0, 45, 46, 83], 4, 2, 20],
    [[0, 70], 2, 1, 64],
  ];
  for (const [cuArr, H, Hkv, D] of cases) {
    const cu = Int32Array.from(cuArr);
    const T = cu[cu.length - 1];
    for (const dtype of ACTS) {
      const q = randn(rng, T * H * D, dtype), k = randn(rng, T * Hkv * D, dtype), v = randn(rng, T * Hkv * D, dtype);
      const dout = randn(rng, T * H * D, dtype);
      const scale = Math.fround(1 / Math.sqrt(D));
      const fwd = runAttentionForward(ctx, q, k, v, cu, H, Hkv, D, scale, dtype);
      const got = runAttentionBackward(ctx, dout, fwd, q, k, v, cu, H, Hkv, D, scale, dtype);
      const want = ref.attentionBackward(dout, q, k, v, cu, H, Hkv, D, scale);
      const label = `cu ${cuArr} H${H}/${Hkv} D${D} ${NAME[dtype]}`;
      assertClose(got.dq, want.dq, BWD[dtype], `dq ${label}`);
      assertClose(got.dk, want.dk, BWD[dtype], `dk ${label}`);
      assertClose(got.dv, want.dv, BWD[dtype], `dv ${label}`);
    }
  }
});

// ---------------------------------------------------------------- argument checks

testEachBackend("transformer ops reject null pointers, bad shapes and unknown dtypes", (ctx) => {
  const s = ctx.lib.symbols;
  using a = ctx.alloc(4096, true);
  using ids = ctx.alloc(64, true);
  const p = a.ptr;
  assertInvalid(ctx, s.ql_embedding_forward(ctx.ptr, null, ids.ptr, p, 2n, 4n, 8n, 0, 0), "out");
  assertInvalid(ctx, s.ql_embedding_forward(ctx.ptr, p, ids.ptr, p, 2n, 4n, 8n, 0, 5), "table_dtype");
  assertInvalid(ctx, s.ql_embedding_backward(ctx.ptr, p, p, ids.ptr, 0n, 4n, 8n, 0), "T");
  assertInvalid(ctx, s.ql_rmsnorm_forward(ctx.ptr, p, p, p, null, 2n, 8n, 1e-5, 0), "weight");
  assertInvalid(ctx, s.ql_rmsnorm_forward(ctx.ptr, p, p, p, p, 2n, 8n, 0, 0), "eps");
  assertInvalid(ctx, s.ql_rmsnorm_backward(ctx.ptr, p, null, p, p, p, null, 2n, 8n, 0), "rstd");
  assertInvalid(ctx, s.ql_rope_forward(ctx.ptr, p, p, ids.ptr, p, 2n, 2n, 7n, 0), "D");
  assertInvalid(ctx, s.ql_rope_backward(ctx.ptr, p, p, ids.ptr, p, 2n, 2n, 8n, 2), "dtype");
  assertInvalid(ctx, s.ql_silu_mul_forward(ctx.ptr, p, p, p, -1n, 0), "n");
  assertInvalid(ctx, s.ql_silu_mul_backward(ctx.ptr, p, p, p, p, p, 8n, 0), "alias");
  assertInvalid(ctx, s.ql_add(ctx.ptr, p, p, p, NaN, 8n, 0), "alpha");
  assertInvalid(ctx, s.ql_cross_entropy(ctx.ptr, null, null, p, ids.ptr, null, 1, 2n, 4n, 0), "losses");
  assertInvalid(ctx, s.ql_sum_squares(ctx.ptr, p, null, 8n), "g");
  assertInvalid(ctx, s.ql_scale(ctx.ptr, p, Infinity, 8n), "alpha");
  assertInvalid(ctx, s.ql_topk(ctx.ptr, ids.ptr, p, p, 1n, 8n, 9n, 0), "k");
  const cu = Int32Array.from([0, 3, 4]);
  assertInvalid(ctx, s.ql_attention_forward(ctx.ptr, p, p, p, p, p, cu, 2n, 5n, 2n, 1n, 8n, 0.5, 0), "cu_seqlens");
  assertInvalid(
    ctx,
    s.ql_attention_forward(ctx.ptr, p, p, p, p, p, Int32Array.from([0, 3, 2]), 2n, 2n, 2n, 1n, 8n, 0.5, 0),
    "nondecreasing",
  );
  assertInvalid(ctx, s.ql_attention_forward(ctx.ptr, p, p, p, p, p, cu, 2n, 4n, 3n, 2n, 8n, 0.5, 0), "multiple of Hkv");
  assertInvalid(ctx, s.ql_attention_backward(ctx.ptr, p, p, p, p, p, null, p, p, p, cu, 2n, 4n, 2n, 1n, 8n, 0.5, 0), "lse");
  assertInvalid(ctx, s.ql_attention_backward(ctx.ptr, p, p, p, p, p, p, p, p, p, cu, 2n, 4n, 2n, 1n, 8n, -1, 0), "softmax_scale");
});

testEachBackend("attention results do not depend on the thread count", (ctx, backend) => {
  const rng = new Rng(14);
  using ctx1 = openContext(backend, 1);
  const cu = Int32Array.from([0, 40, 41, 100]);
  const H = 4, Hkv = 2, D = 16, T = 100;
  for (const dtype of ACTS) {
    const q = randn(rng, T * H * D, dtype), k = randn(rng, T * Hkv * D, dtype), v = randn(rng, T * Hkv * D, dtype);
    const dout = randn(rng, T * H * D, dtype);
    const a = runAttentionForward(ctx, q, k, v, cu, H, Hkv, D, 0.25, dtype);
    const b = runAttentionForward(ctx1, q, k, v, cu, H, Hkv, D, 0.25, dtype);
    assert.deepEqual(a, b, `forward ${NAME[dtype]}`);
    const ga = runAttentionBackward(ctx, dout, a, q, k, v, cu, H, Hkv, D, 0.25, dtype);
    const gb = runAttentionBackward(ctx1, dout, a, q, k, v, cu, H, Hkv, D, 0.25, dtype);
    assert.deepEqual(ga, gb, `backward ${NAME[dtype]}`);
  }
});
