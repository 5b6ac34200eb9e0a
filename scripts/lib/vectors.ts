// vectors.ts — runs a reference-vector file (shared/reference/nf4_vectors.json format) through
// the native quantizer and compares every field bit for bit.
import { decodeBase64 } from "./base64.ts";
import type { Context, QuantTypeName } from "../../server/ffi/tensor.ts";
import { dequantize4bit, dequantizeAbsmax8bit, quantize4bit, quantizeAbsmax8bit } from "../../server/ffi/quant.ts";

export interface VectorCase {
  name?: string;
  quant_type: QuantTypeName;
  blocksize: number;
  n: number;
  input_f32_b64: string;
  packed_u8_hex: string;
  absmax_f32: number[];
  dequant_f32_b64: string;
  double_quant?: {
    offset_f32: number;
    qabsmax_u8_hex: string;
    absmax2_f32: number[];
    nested_blocksize: number;
    dequant_f32_b64: string;
  };
}

export interface CaseResult {
  name: string;
  ok: boolean;
  failures: string[];
}

function hexToBytes(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error("malformed hex string");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function f32FromB64(b64: string): Float32Array {
  const bytes = decodeBase64(b64);
  if (bytes.length % 4 !== 0) throw new Error("float32 payload length is not a multiple of 4");
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4).slice();
}

/** Bitwise comparison of float32 arrays (so -0 ≠ +0 and NaN payloads count). */
function firstBitDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return i;
  return -1;
}

function firstByteDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

export function checkCase(ctx: Context, c: VectorCase, index: number): CaseResult {
  const name = c.name ?? `case ${index}`;
  const failures: string[] = [];
  const expectF32 = (label: string, got: Float32Array, want: Float32Array) => {
    const i = firstBitDiff(got, want);
    if (i >= 0) failures.push(`${label}: first difference at ${i} (got ${got[i]}, want ${want[i]}; lengths ${got.length}/${want.length})`);
  };
  const expectBytes = (label: string, got: Uint8Array, want: Uint8Array) => {
    const i = firstByteDiff(got, want);
    if (i >= 0) {
      failures.push(`${label}: first difference at byte ${i} (got ${got[i]}, want ${want[i]}; lengths ${got.length}/${want.length})`);
    }
  };
  try {
    const x = f32FromB64(c.input_f32_b64);
    if (x.length !== c.n) throw new Error(`input has ${x.length} values, n = ${c.n}`);
    const q = quantize4bit(ctx, x, c.blocksize, c.quant_type);
    expectBytes("packed", q.packed, hexToBytes(c.packed_u8_hex));
    expectF32("absmax", q.absmax, new Float32Array(c.absmax_f32));
    expectF32("dequant", dequantize4bit(ctx, q, c.n, c.blocksize, c.quant_type), f32FromB64(c.dequant_f32_b64));
    if (c.double_quant) {
      const dq = quantizeAbsmax8bit(ctx, q.absmax, c.double_quant.nested_blocksize);
      expectF32("double_quant.offset", new Float32Array([dq.offset]), new Float32Array([c.double_quant.offset_f32]));
      expectBytes("double_quant.qabsmax", dq.qabsmax, hexToBytes(c.double_quant.qabsmax_u8_hex));
      expectF32("double_quant.absmax2", dq.absmax2, new Float32Array(c.double_quant.absmax2_f32));
      const absmax = dequantizeAbsmax8bit(ctx, dq);
      const deq = dequantize4bit(ctx, { packed: q.packed, absmax }, c.n, c.blocksize, c.quant_type);
      expectF32("double_quant.dequant", deq, f32FromB64(c.double_quant.dequant_f32_b64));
    }
  } catch (e) {
    failures.push(`error: ${(e as Error).message}`);
  }
  return { name, ok: failures.length === 0, failures };
}

export function checkVectorFile(ctx: Context, path: string): CaseResult[] {
  const doc = JSON.parse(Deno.readTextFileSync(path));
  if (!doc || !Array.isArray(doc.cases)) throw new Error(`${path}: no "cases" array`);
  return (doc.cases as VectorCase[]).map((c, i) => checkCase(ctx, c, i));
}
