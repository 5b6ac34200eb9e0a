// lora_test.ts — LoRA forward/backward with seeded dropout against float64 references (the
// backward by central finite differences), the documented dropout hash, and the multi-adapter
// forward against rows run alone.
import assert from "node:assert/strict";
import { testEachBackend } from "./backends.ts";
import { Rng } from "./rng.ts";
import { assertClose, readAs, roundArrayBf16, uploadAs } from "./reference_linalg.ts";
import { type Context, DType } from "../../server/ffi/tensor.ts";
import { NativeError } from "../../server/ffi/errors.ts";

// ---------------------------------------------------------------- the hash of common/lora_math.h
const M64 = (1n << 64n) - 1n;
function splitmix64(z: bigint): bigint {
  z = (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n & M64;
  z = (z ^ (z >> 27n)) * 0x94d049bb133111ebn & M64;
  return z ^ (z >> 31n);
}
/** Keep mask of x [T, in] for seed and p, as documented in lora_math.h. */
export function dropoutMask(seed: bigint, n: number, p: number): Uint8Array {
  const key = splitmix64(seed & M64);
  const mask = new Uint8Array(n);
  const pf = Math.fround(p);
  for (let i = 0; i < n; i++) {
    const h = splitmix64((key + BigInt(i) * 0x9e3779b97f4a7c15n) & M64);
    const u = Number(h >> 40n) * 2 ** -24;
    mask[i] = u >= pf ? 1 : 0;
  }
  return mask;
}

interface Lora {
  T: number;
  inF: number;
  outF: number;
  r: number;
  scale: number;
  p: number;
  seed: bigint;
}

/** float64 reference: y = scale · (drop(x) Aᵀ) Bᵀ, and xa. */
function loraRef(c: Lora, x: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, mask: Uint8Array) {
  const inv = Math.fround(1 / Math.fround(1 - Math.fround(c.p)));
  const xd = new Float64Array(c.T * c.inF);
  for (let i = 0; i < xd.length; i++) xd[i] = c.p > 0 ? (mask[i] ? x[i] * inv : 0) : x[i];
  const xa = new Float64Array(c.T * c.r);
  for (let t = 0; t < c.T; t++) {
    for (let j = 0; j < c.r; j++) {
      let s = 0;
      for (let i = 0; i < c.inF; i++) s += xd[t * c.inF + i] * A[j * c.inF + i];
      xa[t * c.r + j] = s;
    }
  }
  const y = new Float64Array(c.T * c.outF);
  for (let t = 0; t < c.T; t++) {
    for (let o = 0; o < c.outF; o++) {
      let s = 0;
      for (let j = 0; j < c.r; j++) s += xa[t * c.r + j] * B[o * c.r + j];
      y[t * c.outF + o] = c.scale * s;
    }
  }
  return { y, xa };
}

function loraForward(ctx: Context, c: Lora, x: Float32Array, A: Float32Array, B: Float32Array, y0: Float32Array, dtype: DType) {
  using dx = uploadAs(ctx, x, dtype);
  using dy = uploadAs(ctx, y0, dtype);
  using dA = ctx.upload(A);
  using dB = ctx.upload(B);
  using dxa = ctx.alloc(c.T * c.r * 4);
  ctx.lib.check(
    ctx.lib.symbols.ql_lora_forward(
      ctx.ptr,
      dy.ptr,
      dxa.ptr,
      dx.ptr,
      dA.ptr,
      dB.ptr,
      BigInt(c.T),
      BigInt(c.inF),
      BigInt(c.outF),
      BigInt(c.r),
      c.scale,
      c.p,
      c.seed,
      dtype,
    ),
    "ql_lora_forward",
  );
  return { y: readAs(dy, dtype, c.T * c.outF), xa: dxa.readF32(0, c.T * c.r) };
}

testEachBackend("lora forward matches float64 with the documented dropout mask (f32, bf16)", (ctx) => {
  const rng = new Rng(201);
  for (const dtype of [DType.F32, DType.BF16]) {
    for (const p of [0, 0.3]) {
      const c: Lora = { T: 7, inF: 37, outF: 23, r: 5, scale: 1.5, p, seed: 0x1234_5678_9abc_def0n };
      const bf = dtype === DType.BF16;
      const x = bf ? roundArrayBf16(rng.normalF32(c.T * c.inF)) : rng.normalF32(c.T * c.inF);
      const y0 = bf ? roundArrayBf16(rng.normalF32(c.T * c.outF)) : rng.normalF32(c.T * c.outF);
      const A = rng.normalF32(c.r * c.inF, 0.3), B = rng.normalF32(c.outF * c.r, 0.3);
      const mask = dropoutMask(c.seed, c.T * c.inF, p);
      const ref = loraRef(c, x, A, B, mask);
      const got = loraForward(ctx, c, x, A, B, y0, dtype);
      const want = ref.y.map((v, i) => v + y0[i]);
      // f32: float32 GEMMs, 1e-5 of the magnitude; bf16: one rounding of y to bf16 (2^-8)
      const scale = want.map((v, i) => Math.abs(v) + Math.abs(ref.y[i]) + 1);
      assertClose(got.y, want, scale, bf ? 8e-3 : 1e-5, 0, `y dtype ${dtype} p ${p}`);
      assertClose(got.xa, ref.xa, ref.xa.map((v) => Math.abs(v) + 1), 1e-5, 0, `xa dtype ${dtype} p ${p}`);
    }
  }
});

testEachBackend("lora dropout: reproducible with the seed, about p dropped", (ctx) => {
  const rng = new Rng(202);
  // A = identity-like picks single inputs, so xa shows the mask: r = in, A = I, B = I, out = in
  const n = 64;
  const c: Lora = { T: 40, inF: n, outF: n, r: n, scale: 1, p: 0.25, seed: 77n };
  const I = new Float32Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  const x = rng.normalF32(c.T * n).map((v) => Math.abs(v) + 0.5);
  const a = loraForward(ctx, c, x, I, I, new Float32Array(c.T * n), DType.F32);
  const b = loraForward(ctx, c, x, I, I, new Float32Array(c.T * n), DType.F32);
  assert.deepEqual(a.xa, b.xa);
  const other = loraForward(ctx, { ...c, seed: 78n }, x, I, I, new Float32Array(c.T * n), DType.F32);
  assert.notDeepEqual(a.xa, other.xa);
  const mask = dropoutMask(c.seed, c.T * n, c.p);
  let dropped = 0;
  for (let i = 0; i < a.xa.length; i++) {
    assert.equal(a.xa[i] === 0 ? 0 : 1, mask[i], `element ${i}`);
    dropped += a.xa[i] === 0 ? 1 : 0;
  }
  const frac = dropped / a.xa.length;
  assert.ok(Math.abs(frac - 0.25) < 0.03, `dropped fraction ${frac}`);
});

testEachBackend("lora backward (dx, dA, dB) matches central finite differences in float64", (ctx) => {
  const rng = new Rng(203);
  for (const dtype of [DType.F32, DType.BF16]) {
    for (const p of [0, 0.4]) {
      const c: Lora = { T: 5, inF: 19, outF: 11, r: 3, scale: 0.7, p, seed: 99n };
      const bf = dtype === DType.BF16;
      const x = bf ? roundArrayBf16(rng.normalF32(c.T * c.inF)) : rng.normalF32(c.T * c.inF);
      const dy = bf ? roundArrayBf16(rng.normalF32(c.T * c.outF)) : rng.normalF32(c.T * c.outF);
      const A = rng.normalF32(c.r * c.inF, 0.5), B = rng.normalF32(c.outF * c.r, 0.5);
      const mask = dropoutMask(c.seed, c.T * c.inF, p);
      const loss = (xx: ArrayLike<number>, AA: ArrayLike<number>, BB: ArrayLike<number>) => {
        const { y } = loraRef(c, xx, AA, BB, mask);
        let s = 0;
        for (let i = 0; i < y.length; i++) s += y[i] * dy[i];
        return s;
      };
      const fd = (arr: Float32Array, which: 0 | 1 | 2) => {
        const g = new Float64Array(arr.length);
        const v = Float64Array.from(arr);
        const h = 1e-3;
        for (let i = 0; i < v.length; i++) {
          const o = v[i];
          v[i] = o + h;
          const lp = loss(which === 0 ? v : x, which === 1 ? v : A, which === 2 ? v : B);
          v[i] = o - h;
          const lm = loss(which === 0 ? v : x, which === 1 ? v : A, which === 2 ? v : B);
          v[i] = o;
          g[i] = (lp - lm) / (2 * h);
        }
        return g;
      };
      const gx = fd(x, 0), gA = fd(A, 1), gB = fd(B, 2);
      // native: xa from the forward, then backward accumulating into non-zero initial values
      const { xa } = loraForward(ctx, c, x, A, B, new Float32Array(c.T * c.outF), dtype);
      const dx0 = bf ? roundArrayBf16(rng.normalF32(x.length)) : rng.normalF32(x.length);
      const dA0 = rng.normalF32(A.length), dB0 = rng.normalF32(B.length);
      using ddx = uploadAs(ctx, dx0, dtype);
      using ddA = ctx.upload(dA0);
      using ddB = ctx.upload(dB0);
      using ddy = uploadAs(ctx, dy, dtype);
      using dxb = uploadAs(ctx, x, dtype);
      using dxa = ctx.upload(xa);
      using dAb = ctx.upload(A);
      using dBb = ctx.upload(B);
      ctx.lib.check(
        ctx.lib.symbols.ql_lora_backward(
          ctx.ptr,
          ddx.ptr,
          ddA.ptr,
          ddB.ptr,
          ddy.ptr,
          dxb.ptr,
          dxa.ptr,
          dAb.ptr,
          dBb.ptr,
          BigInt(c.T),
          BigInt(c.inF),
          BigInt(c.outF),
          BigInt(c.r),
          c.scale,
          c.p,
          c.seed,
          dtype,
        ),
        "ql_lora_backward",
      );
      const what = `dtype ${dtype} p ${p}`;
      const gotDx = readAs(ddx, dtype, x.length).map((v, i) => v - dx0[i]);
      assertClose(gotDx, gx, null, bf ? 1.6e-2 : 1e-4, bf ? 2e-2 : 1e-5, `dx ${what}`);
      assertClose(ddA.readF32(0, A.length).map((v, i) => v - dA0[i]), gA, null, 1e-4, 1e-5, `dA ${what}`);
      assertClose(ddB.readF32(0, B.length).map((v, i) => v - dB0[i]), gB, null, 1e-4, 1e-5, `dB ${what}`);
      if (p > 0) {
        for (let i = 0; i < x.length; i++) if (!mask[i]) assert.equal(gotDx[i] + dx0[i], dx0[i], `dropped dx ${i}`);
      }
    }
  }
});

// ---------------------------------------------------------------- multi-adapter

function multi(
  ctx: Context,
  y0: Float32Array,
  x: Float32Array,
  rowAdapter: Int32Array,
  As: Float32Array[],
  Bs: Float32Array[],
  ranks: number[],
  scales: number[],
  inF: number,
  outF: number,
  dtype: DType,
) {
  const T = rowAdapter.length;
  const bufs = [...As.map((a) => ctx.upload(a)), ...Bs.map((b) => ctx.upload(b))];
  try {
    const n = As.length;
    const aPtrs = BigUint64Array.from(bufs.slice(0, n), (b) => BigInt(Deno.UnsafePointer.value(b.ptr)));
    const bPtrs = BigUint64Array.from(bufs.slice(n), (b) => BigInt(Deno.UnsafePointer.value(b.ptr)));
    using dy = uploadAs(ctx, y0, dtype);
    using dx = uploadAs(ctx, x, dtype);
    ctx.lib.check(
      ctx.lib.symbols.ql_lora_multi_forward(
        ctx.ptr,
        dy.ptr,
        dx.ptr,
        rowAdapter,
        aPtrs,
        bPtrs,
        Int32Array.from(ranks),
        Float32Array.from(scales),
        BigInt(n),
        BigInt(T),
        BigInt(inF),
        BigInt(outF),
        dtype,
      ),
      "ql_lora_multi_forward",
    );
    return readAs(dy, dtype, T * outF);
  } finally {
    for (const b of bufs) b.dispose();
  }
}

testEachBackend("lora multi-adapter: a mixed batch equals each row run alone and float64", (ctx) => {
  const rng = new Rng(204);
  const inF = 40, outF = 27;
  const ranks = [1, 5, 16, 33, 8];
  const scales = [2, 0.5, 1, 0.25, 1.5];
  const As = ranks.map((r) => rng.normalF32(r * inF, 0.3));
  const Bs = ranks.map((r) => rng.normalF32(outF * r, 0.3));
  // 11 mixed rows plus 17 rows of adapter 4 (a large group), shuffled
  const mixed = [0, 3, -1, 1, 2, 3, 0, -1, 2, 1, 3];
  const rowAdapter = Int32Array.from([...mixed, ...Array(17).fill(4)].map((_v, i, a) => a[(i * 5) % a.length]));
  const T = rowAdapter.length;
  for (const dtype of [DType.F32, DType.BF16]) {
    const bf = dtype === DType.BF16;
    const x = bf ? roundArrayBf16(rng.normalF32(T * inF)) : rng.normalF32(T * inF);
    const y0 = bf ? roundArrayBf16(rng.normalF32(T * outF)) : rng.normalF32(T * outF);
    const all = multi(ctx, y0, x, rowAdapter, As, Bs, ranks, scales, inF, outF, dtype);
    for (let t = 0; t < T; t++) {
      const a = rowAdapter[t];
      const row = all.subarray(t * outF, (t + 1) * outF);
      const y0t = y0.subarray(t * outF, (t + 1) * outF);
      if (a < 0) {
        assert.deepEqual(row, y0t, `row ${t} has no adapter: untouched`);
        continue;
      }
      const alone = multi(ctx, y0t, x.subarray(t * inF, (t + 1) * inF), Int32Array.of(a), As, Bs, ranks, scales, inF, outF, dtype);
      assertClose(row, alone, null, 1e-6, 1e-6, `row ${t} (adapter ${a}) mixed vs alone`);
      const c: Lora = { T: 1, inF, outF, r: ranks[a], scale: scales[a], p: 0, seed: 0n };
      const ref = loraRef(c, x.subarray(t * inF, (t + 1) * inF), As[a], Bs[a], new Uint8Array(0)).y.map((v, i) => v + y0t[i]);
      assertClose(row, ref, ref.map((v) => Math.abs(v) + 1), bf ? 8e-3 : 1e-5, 0, `row ${t} vs float64`);
    }
  }
});

testEachBackend("lora: bad arguments are rejected with a message", (ctx) => {
  using b = ctx.alloc(4096);
  const s = ctx.lib.symbols;
  const expect = (status: number, fn: string, pattern: RegExp) =>
    assert.throws(() => ctx.lib.check(status, fn), (e: unknown) => e instanceof NativeError && e.status === 1 && pattern.test(e.message));
  expect(s.ql_lora_forward(ctx.ptr, b.ptr, null, b.ptr, b.ptr, b.ptr, 2n, 4n, 4n, 0n, 1, 0, 0n, 0), "ql_lora_forward", /rank r must be in/);
  expect(s.ql_lora_forward(ctx.ptr, b.ptr, null, b.ptr, b.ptr, b.ptr, 2n, 4n, 4n, 2n, 1, 1, 0n, 0), "ql_lora_forward", /dropout_p/);
  expect(
    s.ql_lora_backward(ctx.ptr, null, b.ptr, b.ptr, b.ptr, b.ptr, null, b.ptr, b.ptr, 2n, 4n, 4n, 2n, 1, 0, 0n, 0),
    "ql_lora_backward",
    /xa is NULL/,
  );
  const ptr = BigInt(Deno.UnsafePointer.value(b.ptr));
  expect(
    s.ql_lora_multi_forward(
      ctx.ptr,
      b.ptr,
      b.ptr,
      Int32Array.of(0, 1),
      BigUint64Array.of(ptr),
      BigUint64Array.of(ptr),
      Int32Array.of(2),
      Float32Array.of(1),
      1n,
      2n,
      4n,
      4n,
      0,
    ),
    "ql_lora_multi_forward",
    /names adapter 1/,
  );
});

testEachBackend("lora multi-adapter (SGMV): rows grouped by adapter at T = 2, 3, 7, 16, 33, 64 equal float64 and the rows alone", (ctx) => {
  const rng = new Rng(205);
  const inF = 72, outF = 35;
  const ranks = [16, 3, 8, 1, 24, 16];
  const scales = [1, 2, 0.5, 1.5, 0.25, 1];
  const As = ranks.map((r) => rng.normalF32(r * inF, 0.3));
  const Bs = ranks.map((r) => rng.normalF32(outF * r, 0.3));
  for (const T of [2, 3, 7, 16, 33, 64]) {
    // decode-like: every row its own sequence, adapters in any order (some rows share one, some none)
    const rowAdapter = Int32Array.from({ length: T }, () => Math.floor(rng.next() * (ranks.length + 1)) - 1);
    for (const dtype of [DType.F32, DType.BF16]) {
      const bf = dtype === DType.BF16;
      const x = bf ? roundArrayBf16(rng.normalF32(T * inF)) : rng.normalF32(T * inF);
      const y0 = bf ? roundArrayBf16(rng.normalF32(T * outF)) : rng.normalF32(T * outF);
      const all = multi(ctx, y0, x, rowAdapter, As, Bs, ranks, scales, inF, outF, dtype);
      for (let t = 0; t < T; t++) {
        const a = rowAdapter[t];
        const row = all.subarray(t * outF, (t + 1) * outF);
        const y0t = y0.subarray(t * outF, (t + 1) * outF);
        if (a < 0) {
          assert.deepEqual(row, y0t, `T ${T} row ${t} has no adapter: untouched`);
          continue;
        }
        const xt = x.subarray(t * inF, (t + 1) * inF);
        const alone = multi(ctx, y0t, xt, Int32Array.of(a), As, Bs, ranks, scales, inF, outF, dtype);
        assertClose(row, alone, null, 1e-6, 1e-6, `T ${T} row ${t} (adapter ${a}) grouped vs alone`);
        const c: Lora = { T: 1, inF, outF, r: ranks[a], scale: scales[a], p: 0, seed: 0n };
        const ref = loraRef(c, xt, As[a], Bs[a], new Uint8Array(0)).y.map((v, i) => v + y0t[i]);
        assertClose(row, ref, ref.map((v) => Math.abs(v) + 1), bf ? 8e-3 : 1e-5, 0, `T ${T} row ${t} vs float64`);
      }
    }
  }
});
