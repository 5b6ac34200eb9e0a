// reference_linalg.ts — float64 references and helpers for the linear-algebra tests
// (matmul_test.ts, lora_test.ts, optim_test.ts).
import type { Context, DeviceBuffer } from "../../server/ffi/tensor.ts";
import { DType, type QWeight } from "../../server/ffi/tensor.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bits of x (round to nearest even), as common/half.h. */
export function toBf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
export function fromBf16(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}
/** x rounded through bf16. */
export function roundBf16(x: number): number {
  return fromBf16(toBf16(x));
}
export function roundArrayBf16(x: Float32Array): Float32Array {
  return x.map(roundBf16);
}

/** A host array as a device buffer of dtype (values already representable for BF16). */
export function uploadAs(ctx: Context, x: Float32Array, dtype: DType): DeviceBuffer {
  if (dtype === DType.F32) return ctx.upload(x);
  return ctx.upload(Uint16Array.from(x, toBf16));
}
/** A device buffer of n elements of dtype, as float. */
export function readAs(buf: DeviceBuffer, dtype: DType, n: number): Float32Array {
  if (dtype === DType.F32) return buf.readF32(0, n);
  return Float32Array.from(buf.readU16(0, n), fromBf16);
}

/** c [m, n] = op(a) · op(b) in float64; op(a) [m, k] (a stored [k, m] when ta). */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  ta = false,
  tb = false,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += (ta ? a[l * m + i] : a[i * k + l]) * (tb ? b[j * k + l] : b[l * n + j]);
      c[i * n + j] = s;
    }
  }
  return c;
}

/** Σ_l |op(a)[i,l]| |op(b)[l,j]| per output: the scale of rounding errors. */
export function absMatmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  ta = false,
  tb = false,
): Float64Array {
  const abs = (x: ArrayLike<number>) => Float64Array.from(x as ArrayLike<number>, Math.abs);
  return matmulRef(abs(a), abs(b), m, n, k, ta, tb);
}

/** The dequantized weight [rows, cols] from bitsandbytes' exported layout and the codebook. */
export function dequantRef(ctx: Context, w: QWeight): Float32Array {
  const { rows, cols, blocksize, quantType } = w.info;
  const code = new Float32Array(16);
  ctx.lib.check(ctx.lib.symbols.ql_codebook(quantType, code), "ql_codebook");
  const st = w.export();
  const out = new Float32Array(rows * cols);
  for (let f = 0; f < rows * cols; f++) {
    const byte = st.packed[f >> 1];
    out[f] = Math.fround(code[f & 1 ? byte & 15 : byte >> 4] * st.absmax[Math.floor(f / blocksize)]);
  }
  return out;
}

/** Asserts |got - want| <= rel · scale + abs elementwise, with a useful message. */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  scale: ArrayLike<number> | null,
  rel: number,
  abs: number,
  what: string,
): void {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length} != ${want.length}`);
  for (let i = 0; i < got.length; i++) {
    const s = scale ? scale[i] : Math.abs(want[i]);
    const tol = rel * s + abs;
    if (!(Math.abs(got[i] - want[i]) <= tol)) {
      throw new Error(`${what}: element ${i}: got ${got[i]}, want ${want[i]} (|diff| ${Math.abs(got[i] - want[i])} > tol ${tol})`);
    }
  }
}
