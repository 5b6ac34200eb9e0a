// matmul_test.ts — 4-bit matmul (fused few-row path and dequantize+GEMM path), its backward, and
// the dense GEMM, against float64 references; the AVX2 path against the AVX-512 one; bad arguments.
import assert from "node:assert/strict";
import { openContext, testEachBackend } from "./backends.ts";
import { Rng } from "./rng.ts";
import { absMatmulRef, assertClose, dequantRef, matmulRef, readAs, roundArrayBf16, uploadAs } from "./reference_linalg.ts";
import { type Context, DType, type QuantTypeName, QWeight } from "../../server/ffi/tensor.ts";
import { NativeError } from "../../server/ffi/errors.ts";

// Tolerances, relative to Σ|x||w| of each output (the scale of rounding error):
// F32: float32 accumulation, 1e-5. BF16: inputs are bf16 values (exact), the GEMM path
// multiplies bf16-rounded weights and the output is rounded to bf16: 1e-2.
const TOL = { [DType.F32]: 1e-5, [DType.BF16]: 1e-2 } as Record<number, number>;

function matmul(
  ctx: Context,
  w: QWeight,
  x: Float32Array,
  y0: Float32Array,
  m: number,
  dtype: DType,
  accumulate: boolean,
  backward = false,
): Float32Array {
  const n = backward ? w.info.cols : w.info.rows;
  using dx = uploadAs(ctx, x, dtype);
  using dy = uploadAs(ctx, y0, dtype);
  const s = ctx.lib.symbols;
  const fn = backward ? "ql_matmul_4bit_backward" : "ql_matmul_4bit";
  const st = backward
    ? s.ql_matmul_4bit_backward(ctx.ptr, dy.ptr, dx.ptr, w.ptr, BigInt(m), dtype, accumulate ? 1 : 0)
    : s.ql_matmul_4bit(ctx.ptr, dy.ptr, dx.ptr, w.ptr, BigInt(m), dtype, accumulate ? 1 : 0);
  ctx.lib.check(st, fn);
  return readAs(dy, dtype, m * n);
}

function checkMatmul(ctx: Context, rng: Rng, rows: number, cols: number, qt: QuantTypeName, bs: number, dq: boolean, ms: number[]): void {
  const wf = rng.normalF32(rows * cols, 0.05);
  using w = QWeight.quantize(ctx, wf, DType.F32, rows, cols, { quantType: qt, blocksize: bs, doubleQuant: dq });
  const wd = dequantRef(ctx, w);
  for (const dtype of [DType.F32, DType.BF16]) {
    for (const m of ms) {
      const what = `${qt} dq=${dq} bs=${bs} ${rows}x${cols} m=${m} ${dtype === DType.F32 ? "f32" : "bf16"}`;
      let x = rng.normalF32(m * cols);
      let y0 = rng.normalF32(m * rows);
      if (dtype === DType.BF16) {
        x = roundArrayBf16(x);
        y0 = roundArrayBf16(y0);
      }
      const accumulate = m % 2 === 1;
      // forward: y = x · Wᵀ (+ y0)
      const want = matmulRef(x, wd, m, rows, cols, false, true);
      const scale = absMatmulRef(x, wd, m, rows, cols, false, true);
      if (accumulate) { for (let i = 0; i < want.length; i++) want[i] += y0[i], scale[i] += Math.abs(y0[i]); }
      assertClose(matmul(ctx, w, x, y0, m, dtype, accumulate), want, scale, TOL[dtype], 1e-6, `forward ${what}`);
      // backward: dx = dy · W (+ dx0)
      const dy = dtype === DType.BF16 ? roundArrayBf16(rng.normalF32(m * rows)) : rng.normalF32(m * rows);
      const dx0 = dtype === DType.BF16 ? roundArrayBf16(rng.normalF32(m * cols)) : rng.normalF32(m * cols);
      const wantB = matmulRef(dy, wd, m, cols, rows);
      const scaleB = absMatmulRef(dy, wd, m, cols, rows);
      if (accumulate) { for (let i = 0; i < wantB.length; i++) wantB[i] += dx0[i], scaleB[i] += Math.abs(dx0[i]); }
      assertClose(matmul(ctx, w, dy, dx0, m, dtype, accumulate, true), wantB, scaleB, TOL[dtype], 1e-6, `backward ${what}`);
    }
  }
}

testEachBackend("matmul_4bit: all quant types, double quant, fused (m <= 64) and GEMM (m > 64) paths", (ctx) => {
  const rng = new Rng(101);
  for (const qt of ["nf4", "fp4", "int4"] as QuantTypeName[]) {
    for (const dq of [true, false]) {
      // blocksize 64 does not divide cols = 96: blocks straddle rows
      checkMatmul(ctx, rng, 37, 96, qt, 64, dq, [1, 3, 8, 13, 70]);
    }
  }
});

testEachBackend("matmul_4bit: odd shapes and every blocksize", (ctx) => {
  const rng = new Rng(102);
  checkMatmul(ctx, rng, 19, 100, "nf4", 32, true, [1, 5, 11, 65]); // cols % 32 != 0: general path
  checkMatmul(ctx, rng, 7, 33, "fp4", 128, false, [2, 9, 67]); // odd cols: bytes straddle rows
  checkMatmul(ctx, rng, 33, 64, "nf4", 4096, true, [1, 10]); // one partial block
  checkMatmul(ctx, rng, 40, 1024, "int4", 2048, true, [4]);
  checkMatmul(ctx, rng, 24, 256, "nf4", 64, true, [1, 3, 8]); // bf16 fused int8 path: cols % 128 == 0
  checkMatmul(ctx, rng, 10, 384, "fp4", 128, false, [2]);
  // several dequantized tiles (f32: 32 rows per tile, bf16: 64) through the test-only size cap
  Deno.env.set("QLORA_MATMUL_TILE_BYTES", "32768");
  try {
    checkMatmul(ctx, rng, 100, 256, "nf4", 64, false, [9, 65]);
  } finally {
    Deno.env.delete("QLORA_MATMUL_TILE_BYTES");
  }
});

// Small M (2..64 rows: the kernel that decodes each weight group once for all rows) against
// float64 and against the same rows run one at a time (m = 1, the GEMV).
function checkSmallM(ctx: Context, rng: Rng, rows: number, cols: number, qt: QuantTypeName, bs: number, dq: boolean, ms: number[]): void {
  using w = QWeight.quantize(ctx, rng.normalF32(rows * cols, 0.05), DType.F32, rows, cols, {
    quantType: qt,
    blocksize: bs,
    doubleQuant: dq,
  });
  const wd = dequantRef(ctx, w);
  for (const dtype of [DType.F32, DType.BF16]) {
    for (const m of ms) {
      const what = `${qt} dq=${dq} bs=${bs} ${rows}x${cols} m=${m} ${dtype === DType.F32 ? "f32" : "bf16"}`;
      let x = rng.normalF32(m * cols);
      let y0 = rng.normalF32(m * rows);
      if (dtype === DType.BF16) {
        x = roundArrayBf16(x);
        y0 = roundArrayBf16(y0);
      }
      const accumulate = m % 2 === 1;
      const want = matmulRef(x, wd, m, rows, cols, false, true);
      const scale = absMatmulRef(x, wd, m, rows, cols, false, true);
      if (accumulate) { for (let i = 0; i < want.length; i++) want[i] += y0[i], scale[i] += Math.abs(y0[i]); }
      const got = matmul(ctx, w, x, y0, m, dtype, accumulate);
      assertClose(got, want, scale, TOL[dtype], 1e-6, `small-M forward ${what}`);
      // row by row through the one-row path
      const one = new Float32Array(m * rows);
      for (let i = 0; i < m; i++) {
        one.set(
          matmul(ctx, w, x.subarray(i * cols, (i + 1) * cols), y0.subarray(i * rows, (i + 1) * rows), 1, dtype, accumulate),
          i * rows,
        );
      }
      assertClose(got, one, scale, 2 * TOL[dtype], 1e-6, `small-M vs row-by-row ${what}`);
    }
  }
}

const EVERY_M = Array.from({ length: 64 }, (_, i) => i + 1);

testEachBackend("matmul_4bit small M: every m in 1..64 against float64 and the one-row path", (ctx) => {
  checkSmallM(ctx, new Rng(111), 37, 96, "nf4", 64, true, EVERY_M); // blocks straddle rows
});

testEachBackend("matmul_4bit small M: quant types, blocksizes and odd shapes at m = 2, 3, 7, 16, 33, 64", (ctx) => {
  const rng = new Rng(112);
  const ms = [2, 3, 7, 16, 33, 64];
  for (const qt of ["nf4", "fp4", "int4"] as QuantTypeName[]) checkSmallM(ctx, rng, 21, 256, qt, 64, qt !== "fp4", ms);
  checkSmallM(ctx, rng, 19, 100, "nf4", 32, true, ms); // cols % 32 != 0
  checkSmallM(ctx, rng, 7, 33, "fp4", 128, false, ms); // odd cols: bytes straddle rows
  checkSmallM(ctx, rng, 5, 64, "nf4", 4096, true, ms); // one partial block
  checkSmallM(ctx, rng, 6, 576, "nf4", 64, true, [16]); // SmolLM hidden size
});

testEachBackend("matmul_4bit small M: the AVX2 kernel (QLORA_FORCE_AVX2=1) against float64", (_ctx, backend) => {
  if (backend !== "cpu") return;
  Deno.env.set("QLORA_FORCE_AVX2", "1");
  try {
    const c2 = openContext("cpu");
    try {
      assert.equal(c2.describe().isa, "avx2");
      const rng = new Rng(113);
      checkSmallM(c2, rng, 37, 96, "nf4", 64, true, [2, 3, 7, 16, 33, 64]);
      checkSmallM(c2, rng, 7, 33, "fp4", 128, false, [2, 5, 64]);
      checkSmallM(c2, rng, 19, 100, "int4", 32, true, [3, 16]);
    } finally {
      c2.dispose();
    }
  } finally {
    Deno.env.delete("QLORA_FORCE_AVX2");
  }
});

testEachBackend("matmul_4bit: imported weights give the same products as quantized ones", (ctx) => {
  const rng = new Rng(103);
  const rows = 24, cols = 64;
  using w = QWeight.quantize(ctx, rng.normalF32(rows * cols), DType.F32, rows, cols, {
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
  });
  const st = w.export();
  const code = new Float32Array(16);
  ctx.lib.check(ctx.lib.symbols.ql_codebook(0, code), "ql_codebook");
  using w2 = QWeight.import(ctx, rows, cols, "nf4", 64, { ...st, code });
  const x = rng.normalF32(2 * cols);
  const y0 = new Float32Array(2 * rows);
  assert.deepEqual(matmul(ctx, w2, x, y0, 2, DType.F32, false), matmul(ctx, w, x, y0, 2, DType.F32, false));
});

function gemm(
  ctx: Context,
  c0: Float32Array,
  cd: DType,
  a: Float32Array,
  ad: DType,
  b: Float32Array,
  bd: DType,
  m: number,
  n: number,
  k: number,
  ta: boolean,
  tb: boolean,
  alpha: number,
  beta: number,
) {
  using dc = uploadAs(ctx, c0, cd);
  using da = uploadAs(ctx, a, ad);
  using db = uploadAs(ctx, b, bd);
  ctx.lib.check(
    ctx.lib.symbols.ql_gemm(
      ctx.ptr,
      dc.ptr,
      cd,
      da.ptr,
      ad,
      db.ptr,
      bd,
      BigInt(m),
      BigInt(n),
      BigInt(k),
      ta ? 1 : 0,
      tb ? 1 : 0,
      alpha,
      beta,
    ),
    "ql_gemm",
  );
  return readAs(dc, cd, m * n);
}

testEachBackend("gemm: every dtype combination and transposition against float64", (ctx) => {
  const rng = new Rng(104);
  const dts = [DType.F32, DType.BF16];
  let case_ = 0;
  for (const ad of dts) {
    for (const bd of dts) {
      for (const cd of dts) {
        for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
          const m = 3 + (case_ % 5), n = 13 + (case_ % 3), k = 19 + case_ % 7;
          case_++;
          const a = ad === DType.BF16 ? roundArrayBf16(rng.normalF32(m * k)) : rng.normalF32(m * k);
          const b = bd === DType.BF16 ? roundArrayBf16(rng.normalF32(k * n)) : rng.normalF32(k * n);
          const c0 = cd === DType.BF16 ? roundArrayBf16(rng.normalF32(m * n)) : rng.normalF32(m * n);
          const alpha = 0.75, beta = case_ % 2 ? 0.5 : 0;
          if (beta === 0) c0.fill(NaN); // beta = 0 must not read c
          const got = gemm(ctx, c0, cd, a, ad, b, bd, m, n, k, ta, tb, alpha, beta);
          const want = matmulRef(a, b, m, n, k, ta, tb);
          const scale = absMatmulRef(a, b, m, n, k, ta, tb);
          for (let i = 0; i < want.length; i++) {
            want[i] = alpha * want[i] + (beta ? beta * c0[i] : 0);
            scale[i] = alpha * scale[i] + (beta ? Math.abs(beta * c0[i]) : 0);
          }
          const tol = cd === DType.BF16 ? 8e-3 : 1e-5;
          assertClose(got, want, scale, tol, 1e-6, `gemm a${ad} b${bd} c${cd} ta${ta} tb${tb}`);
        }
      }
    }
  }
});

testEachBackend("matmul_4bit: the AVX2 path equals the AVX-512 path (QLORA_FORCE_AVX2=1)", (ctx, backend) => {
  if (backend !== "cpu") return;
  const rng = new Rng(105);
  const rows = 70, cols = 256;
  const wf = rng.normalF32(rows * cols);
  const run = (c: Context) => {
    using w = QWeight.quantize(c, wf, DType.F32, rows, cols, { quantType: "nf4", blocksize: 64, doubleQuant: true });
    const out: Float32Array[] = [];
    for (const m of [1, 4, 8, 12]) {
      const x = roundArrayBf16(new Rng(m).normalF32(m * cols));
      for (const dtype of [DType.F32, DType.BF16]) {
        out.push(matmul(c, w, x, new Float32Array(m * rows), m, dtype, false));
        out.push(matmul(c, w, x.subarray(0, m * rows), new Float32Array(m * cols), m, dtype, false, true));
      }
    }
    // dense bf16 x bf16 (oneDNN bf16 matmul on AVX-512, float32 sgemm on AVX2)
    const a = roundArrayBf16(new Rng(9).normalF32(12 * 40)), b = roundArrayBf16(new Rng(10).normalF32(40 * 20));
    for (let k = 0; k < 2; k++) {
      out.push(gemm(c, new Float32Array(12 * 20), DType.F32, a, DType.BF16, b, DType.BF16, 12, 20, 40, false, false, 1, 0));
    }
    return out;
  };
  const fast = run(ctx);
  Deno.env.set("QLORA_FORCE_AVX2", "1");
  let slow: Float32Array[];
  try {
    const c2 = openContext("cpu");
    try {
      assert.equal(c2.describe().isa, "avx2");
      slow = run(c2);
    } finally {
      c2.dispose();
    }
  } finally {
    Deno.env.delete("QLORA_FORCE_AVX2");
  }
  for (let i = 0; i < fast.length; i++) {
    // bf16 results may differ by bf16 roundings (the AVX2 path multiplies float32 weights,
    // the AVX-512 GEMM path bf16 ones): tolerance relative to the largest output of the case
    const big = fast[i].reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    const bf = i < 16 && i % 4 >= 2;
    assertClose(slow[i], fast[i], null, 0, (bf ? 2e-2 : 1e-5) * big, `avx2 vs avx512 case ${i}`);
  }
  // the float32 fused path (m <= 8) agrees closely
  assertClose(slow[0], fast[0], null, 1e-5, 1e-5, "avx2 vs avx512 f32 m=1");
});

testEachBackend("matmul_4bit / gemm: bad arguments are rejected with a message", (ctx) => {
  const rng = new Rng(106);
  using w = QWeight.quantize(ctx, rng.normalF32(8 * 32), DType.F32, 8, 32, {});
  using x = ctx.alloc(64 * 4);
  using y = ctx.alloc(64 * 4);
  const s = ctx.lib.symbols;
  const expect = (status: number, fn: string, pattern: RegExp) =>
    assert.throws(() => ctx.lib.check(status, fn), (e: unknown) => e instanceof NativeError && e.status === 1 && pattern.test(e.message));
  expect(s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w.ptr, 0n, DType.F32, 0), "ql_matmul_4bit", /m must be > 0/);
  expect(s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w.ptr, 1n, 7, 0), "ql_matmul_4bit", /dtype/);
  expect(s.ql_matmul_4bit(ctx.ptr, null, x.ptr, w.ptr, 1n, DType.F32, 0), "ql_matmul_4bit", /y is NULL/);
  expect(s.ql_matmul_4bit_backward(ctx.ptr, y.ptr, x.ptr, w.ptr, 1n, DType.F32, 2), "ql_matmul_4bit_backward", /accumulate/);
  expect(s.ql_gemm(ctx.ptr, y.ptr, DType.F16, x.ptr, 0, x.ptr, 0, 2n, 2n, 2n, 0, 0, 1, 0), "ql_gemm", /c_dtype/);
  expect(s.ql_gemm(ctx.ptr, y.ptr, 0, x.ptr, 0, x.ptr, 0, 2n, 0n, 2n, 0, 0, 1, 0), "ql_gemm", /n must be > 0/);
  expect(s.ql_gemm(ctx.ptr, y.ptr, 0, x.ptr, 0, x.ptr, 0, 2n, 2n, 2n, 0, 0, NaN, 0), "ql_gemm", /alpha must be finite/);
});
