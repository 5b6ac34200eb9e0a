// quant.ts — blockwise 4-bit and 8-bit (double) quantization over host arrays, through the
// native library (device buffers are used and released inside each call).
import { type Context, QuantType, type QuantTypeName } from "./tensor.ts";

export interface Quantized4bit {
  packed: Uint8Array; // ceil(n/2) bytes, first element in the high nibble
  absmax: Float32Array; // one per block
}

export interface DoubleQuantized {
  qabsmax: Uint8Array;
  absmax2: Float32Array;
  offset: number;
  nestedBlocksize: number;
}

export function quantize4bit(ctx: Context, x: Float32Array, blocksize: number, quantType: QuantTypeName): Quantized4bit {
  const n = x.length;
  const nb = Math.ceil(n / blocksize);
  using dx = ctx.upload(x);
  using dp = ctx.alloc(Math.ceil(n / 2) || 1);
  using da = ctx.alloc(nb * 4 || 4);
  ctx.lib.check(
    ctx.lib.symbols.ql_quantize_4bit(ctx.ptr, dp.ptr, da.ptr, dx.ptr, BigInt(n), blocksize, QuantType[quantType]),
    "ql_quantize_4bit",
  );
  return { packed: dp.readBytes(0, Math.ceil(n / 2)), absmax: da.readF32(0, nb) };
}

export function dequantize4bit(ctx: Context, q: Quantized4bit, n: number, blocksize: number, quantType: QuantTypeName): Float32Array {
  using dp = ctx.upload(q.packed);
  using da = ctx.upload(q.absmax);
  using dout = ctx.alloc(n * 4 || 4);
  ctx.lib.check(
    ctx.lib.symbols.ql_dequantize_4bit(ctx.ptr, dout.ptr, dp.ptr, da.ptr, BigInt(n), blocksize, QuantType[quantType]),
    "ql_dequantize_4bit",
  );
  return dout.readF32(0, n);
}

export function quantizeAbsmax8bit(ctx: Context, absmax: Float32Array, nestedBlocksize = 256): DoubleQuantized {
  const nb = absmax.length;
  const nb2 = Math.ceil(nb / nestedBlocksize);
  using da = ctx.upload(absmax);
  using dq = ctx.alloc(nb || 1);
  using d2 = ctx.alloc(nb2 * 4 || 4);
  using doff = ctx.alloc(4);
  ctx.lib.check(
    ctx.lib.symbols.ql_quantize_absmax_8bit(ctx.ptr, dq.ptr, d2.ptr, doff.ptr, da.ptr, BigInt(nb), nestedBlocksize),
    "ql_quantize_absmax_8bit",
  );
  return { qabsmax: dq.readBytes(0, nb), absmax2: d2.readF32(0, nb2), offset: doff.readF32(0, 1)[0], nestedBlocksize };
}

export function dequantizeAbsmax8bit(ctx: Context, dq: DoubleQuantized): Float32Array {
  const nb = dq.qabsmax.length;
  using d1 = ctx.upload(dq.qabsmax);
  using d2 = ctx.upload(dq.absmax2);
  using doff = ctx.upload(new Float32Array([dq.offset]));
  using dout = ctx.alloc(nb * 4 || 4);
  ctx.lib.check(
    ctx.lib.symbols.ql_dequantize_absmax_8bit(ctx.ptr, dout.ptr, d1.ptr, d2.ptr, doff.ptr, BigInt(nb), dq.nestedBlocksize),
    "ql_dequantize_absmax_8bit",
  );
  return dout.readF32(0, nb);
}

export function codebook(ctx: Context, quantType: QuantTypeName): Float32Array {
  const out = new Float32Array(16);
  ctx.lib.check(ctx.lib.symbols.ql_codebook(QuantType[quantType], out), "ql_codebook");
  return out;
}
