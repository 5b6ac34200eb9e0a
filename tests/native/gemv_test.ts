// gemv_test.ts — ql_gemm's few-row path (x [m ≤ 8, k] · W [n, k]ᵀ, taken when n·k ≥ 2^20: the
// lm_head of a decode step) against a float64 reference, for f32 and bf16 weights and outputs.
import assert from "node:assert/strict";
import { testEachBackend } from "./backends.ts";
import { Rng } from "./rng.ts";
import { DType } from "../../server/ffi/tensor.ts";
import * as ops from "../../server/ffi/ops.ts";

function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(u, (v) => (v + 0x7fff + ((v >>> 16) & 1)) >>> 16);
}
function fromBf16(h: Uint16Array): Float32Array {
  return new Float32Array(Uint32Array.from(h, (v) => v << 16).buffer);
}

testEachBackend("gemm few-row path (lm_head of a decode step) matches float64", (ctx) => {
  const rng = new Rng(21);
  const n = 1031, k = 1037; // n·k ≥ 2^20, odd sizes for the tails
  for (const m of [1, 3, 8]) {
    for (const bType of [DType.F32, DType.BF16]) {
      for (const cType of [DType.F32, DType.BF16]) {
        for (const beta of [0, 1]) {
          const x = rng.normalF32(m * k), w32 = rng.normalF32(n * k, 0.05), c0 = rng.normalF32(m * n);
          const wBits = bType === DType.BF16 ? toBf16(w32) : w32;
          const w = bType === DType.BF16 ? fromBf16(wBits as Uint16Array) : w32;
          using dx = ctx.upload(x);
          using dw = ctx.upload(wBits);
          using dc = ctx.upload(cType === DType.BF16 ? toBf16(c0) : c0);
          const c0v = cType === DType.BF16 ? fromBf16(toBf16(c0)) : c0;
          ops.gemm(ctx, { c: dc, cType, a: dx, aType: DType.F32, b: dw, bType, m, n, k, transB: true, alpha: 0.5, beta });
          const got = cType === DType.BF16 ? fromBf16(dc.readU16(0, m * n)) : dc.readF32(0, m * n);
          for (let r = 0; r < m; r++) {
            for (let j = 0; j < n; j++) {
              let s = 0, mag = 0;
              for (let i = 0; i < k; i++) {
                s += x[r * k + i] * w[j * k + i];
                mag += Math.abs(x[r * k + i] * w[j * k + i]);
              }
              const want = 0.5 * s + beta * c0v[r * n + j];
              const tol = cType === DType.BF16 ? 8e-3 * (Math.abs(want) + 0.5 * mag) : 1e-5 * (mag + Math.abs(c0v[r * n + j]));
              assert.ok(
                Math.abs(got[r * n + j] - want) <= tol,
                `m ${m} b ${bType} c ${cType} beta ${beta} [${r},${j}]: ${got[r * n + j]} vs ${want}`,
              );
            }
          }
        }
      }
    }
  }
});
