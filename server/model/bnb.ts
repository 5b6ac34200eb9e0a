// bnb.ts — bitsandbytes' serialized 4-bit layout ("bnb-4bit" model folders), read and written.
//
// For a weight named W (e.g. model.layers.0.self_attn.q_proj.weight) bitsandbytes stores:
//   W                                  U8 [ceil(n/2), 1]  packed codes, first element high nibble
//   W.absmax                           F32 [nb] float absmax, or U8 [nb] codes when nested
//   W.quant_map                        F32 [16] the codebook
//   W.nested_absmax                    F32 [nb2]          (nested only)
//   W.nested_quant_map                 F32 [256] dynamic map (nested only)
//   W.quant_state.bitsandbytes__<qt>   U8 JSON {quant_type, blocksize, dtype, shape,
//                                        nested_blocksize, nested_dtype, nested_offset}
import type { Context, QWeight as QWeightT } from "../ffi/tensor.ts";
import { QWeight } from "../ffi/tensor.ts";
import { codebook } from "../ffi/quant.ts";
import type { TensorToWrite } from "./safetensors.ts";

export interface TensorSource {
  has(name: string): boolean;
  info(name: string): { dtype: string; shape: number[]; byteLength: number };
  read(name: string): Promise<Uint8Array>;
}

export class BnbFormatError extends Error {
  override name = "BnbFormatError";
}

const QUANT_TYPES = ["nf4", "fp4"] as const;

/** The quant-state key of W, if W is stored in bitsandbytes' 4-bit layout. */
export function bnbStateKey(src: TensorSource, weightName: string): string | null {
  for (const qt of QUANT_TYPES) {
    const key = `${weightName}.quant_state.bitsandbytes__${qt}`;
    if (src.has(key)) return key;
  }
  return null;
}

function f32(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new BnbFormatError("float32 tensor has a partial element");
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Reads W in bitsandbytes' layout into a native 4-bit weight; checks every size. */
export async function readBnbWeight(
  ctx: Context,
  src: TensorSource,
  weightName: string,
  /** Reads the packed codes (the loader's reused buffers: valid until its next read). */
  readPacked: (name: string) => Promise<Uint8Array> = (name) => src.read(name),
): Promise<QWeightT> {
  const key = bnbStateKey(src, weightName);
  if (!key) throw new BnbFormatError(`${weightName}: no bitsandbytes quant_state tensor`);
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(new TextDecoder().decode(await src.read(key)));
  } catch (e) {
    throw new BnbFormatError(`${key}: not JSON (${(e as Error).message})`);
  }
  const qt = state.quant_type;
  if (qt !== "nf4" && qt !== "fp4") throw new BnbFormatError(`${key}: quant_type ${JSON.stringify(qt)} is not nf4 or fp4`);
  const shape = state.shape;
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new BnbFormatError(`${key}: shape ${JSON.stringify(shape)} is not [rows, cols]`);
  }
  const [rows, cols] = shape as number[];
  const blocksize = Number(state.blocksize);
  const n = rows * cols, nb = Math.ceil(n / blocksize);
  const packedInfo = src.info(weightName);
  if (packedInfo.dtype !== "U8" || packedInfo.byteLength !== Math.ceil(n / 2)) {
    throw new BnbFormatError(
      `${weightName}: expected ${Math.ceil(n / 2)} bytes of U8 packed codes, found ${packedInfo.byteLength} of ${packedInfo.dtype}`,
    );
  }
  const packed = await readPacked(weightName);
  const code = f32(await src.read(`${weightName}.quant_map`));
  if (code.length !== 16) throw new BnbFormatError(`${weightName}.quant_map has ${code.length} entries, not 16`);
  const absmaxBytes = await src.read(`${weightName}.absmax`);
  const nested = src.has(`${weightName}.nested_absmax`);
  if (!nested) {
    const absmax = f32(absmaxBytes);
    if (absmax.length !== nb) throw new BnbFormatError(`${weightName}.absmax has ${absmax.length} values, expected ${nb}`);
    return QWeight.import(ctx, rows, cols, qt, blocksize, { packed, absmax, code });
  }
  const nestedBlocksize = Number(state.nested_blocksize);
  const offset = Number(state.nested_offset);
  if (!Number.isFinite(offset)) throw new BnbFormatError(`${key}: nested_offset is not a number`);
  if (absmaxBytes.length !== nb) throw new BnbFormatError(`${weightName}.absmax has ${absmaxBytes.length} codes, expected ${nb}`);
  const absmax2 = f32(await src.read(`${weightName}.nested_absmax`));
  if (absmax2.length !== Math.ceil(nb / nestedBlocksize)) {
    throw new BnbFormatError(`${weightName}.nested_absmax has ${absmax2.length} values, expected ${Math.ceil(nb / nestedBlocksize)}`);
  }
  if (src.has(`${weightName}.nested_quant_map`)) {
    const map = f32(await src.read(`${weightName}.nested_quant_map`));
    const ours = new Float32Array(256);
    ctx.lib.check(ctx.lib.symbols.ql_dynamic_map(ours), "ql_dynamic_map");
    if (map.length !== 256 || map.some((v, i) => Math.abs(v - ours[i]) > 1e-6)) {
      throw new BnbFormatError(`${weightName}.nested_quant_map is not bitsandbytes' signed dynamic map`);
    }
  }
  return QWeight.import(ctx, rows, cols, qt, blocksize, {
    packed,
    code,
    nested: { qabsmax: absmaxBytes, absmax2, offset, blocksize: nestedBlocksize },
  });
}

const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * The tensors bitsandbytes would save for W (nf4/fp4 only: int4 has no bitsandbytes form). The
 * big ones (codes, absmax) are producers: W is exported from the device when the first of them
 * is written and dropped after the last, so writing a whole model holds one weight's host copy
 * at a time.
 */
export function bnbTensors(ctx: Context, weightName: string, w: QWeightT, sourceDtype = "bfloat16"): TensorToWrite[] {
  const { rows, cols, quantType, blocksize, doubleQuant, nestedBlocksize } = w.info;
  const qt = quantType === 0 ? "nf4" : quantType === 1 ? "fp4" : null;
  if (!qt) throw new BnbFormatError(`${weightName}: int4 weights have no bitsandbytes serialization`);
  const n = rows * cols, nb = Math.ceil(n / blocksize);
  let exported: ReturnType<QWeightT["export"]> | null = null, taken = 0;
  const big = doubleQuant ? 3 : 2; // producers below
  const take = <T>(pick: (s: ReturnType<QWeightT["export"]>) => T): () => T => () => {
    exported ??= w.export();
    const part = pick(exported);
    if (++taken === big) exported = null;
    return part;
  };
  const state: Record<string, unknown> = { quant_type: qt, blocksize, dtype: sourceDtype, shape: [rows, cols] };
  const out: TensorToWrite[] = [
    { name: weightName, dtype: "U8", shape: [Math.ceil(n / 2), 1], data: take((s) => s.packed) },
    { name: `${weightName}.quant_map`, dtype: "F32", shape: [16], data: u8(codebook(ctx, qt)) },
  ];
  if (doubleQuant) {
    const map = new Float32Array(256);
    ctx.lib.check(ctx.lib.symbols.ql_dynamic_map(map), "ql_dynamic_map");
    out.push(
      { name: `${weightName}.absmax`, dtype: "U8", shape: [nb], data: take((s) => s.nested!.qabsmax) },
      {
        name: `${weightName}.nested_absmax`,
        dtype: "F32",
        shape: [Math.ceil(nb / nestedBlocksize)],
        data: take((s) => u8(s.nested!.absmax2)),
      },
      { name: `${weightName}.nested_quant_map`, dtype: "F32", shape: [256], data: u8(map) },
    );
    Object.assign(state, { nested_blocksize: nestedBlocksize, nested_dtype: "float32", nested_offset: w.nestedOffset() });
  } else {
    out.push({ name: `${weightName}.absmax`, dtype: "F32", shape: [nb], data: take((s) => u8(s.absmax)) });
  }
  const json = new TextEncoder().encode(JSON.stringify(state));
  out.push({ name: `${weightName}.quant_state.bitsandbytes__${qt}`, dtype: "U8", shape: [json.length], data: json });
  return out;
}
