// tensor.ts — typed handles over the native library: a Context (one backend instance), device
// buffers and frozen 4-bit weights. Handles keep their pointers private and are released with
// dispose() (or `using`).
import { type BackendName, loadLibrary, type NativeLibrary } from "./library.ts";

export const DType = { F32: 0, BF16: 1, F16: 2, U8: 3, I32: 4 } as const;
export type DType = (typeof DType)[keyof typeof DType];
export const QuantType = { nf4: 0, fp4: 1, int4: 2 } as const;
export type QuantTypeName = keyof typeof QuantType;

export function dtypeSize(dtype: DType): number {
  return dtype === DType.F32 || dtype === DType.I32 ? 4 : dtype === DType.U8 ? 1 : 2;
}

function outPointer(cell: BigUint64Array): Deno.PointerObject {
  const p = Deno.UnsafePointer.create(cell[0]);
  if (p === null) throw new Error("native call returned a null handle");
  return p;
}

/** One backend instance (thread pool / device / stream). */
export class Context implements Disposable {
  #ptr: Deno.PointerObject | null;
  readonly lib: NativeLibrary;
  readonly threads: number;

  constructor(options: { threads?: number; device?: number; backend?: BackendName; libraryPath?: string } = {}) {
    this.lib = loadLibrary({ backend: options.backend, path: options.libraryPath });
    const cell = new BigUint64Array(1);
    this.lib.check(this.lib.symbols.ql_ctx_create(options.threads ?? 0, options.device ?? 0, cell), "ql_ctx_create");
    this.#ptr = outPointer(cell);
    this.threads = this.describe().threads as number;
  }

  get backend(): string {
    return this.lib.backend;
  }

  /** The raw ql_ctx* (for ops wrappers); throws after dispose. */
  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("Context is disposed");
    return this.#ptr;
  }

  /** Host and device share memory on the CPU backends: buffers can be viewed without copies. */
  get hostVisible(): boolean {
    return this.backend !== "cuda";
  }

  describe(): Record<string, unknown> {
    const buf = new Uint8Array(4096);
    this.lib.check(this.lib.symbols.ql_ctx_describe(this.ptr, buf, BigInt(buf.length)), "ql_ctx_describe");
    return JSON.parse(new TextDecoder().decode(buf.subarray(0, buf.indexOf(0))));
  }

  sync(): void {
    this.lib.check(this.lib.symbols.ql_sync(this.ptr), "ql_sync");
  }

  /** Allocates device memory; zeroed when zero is true. */
  alloc(bytes: number, zero = false): DeviceBuffer {
    return new DeviceBuffer(this, bytes, zero);
  }

  /** A device buffer holding a copy of the given host array. */
  upload(data: ArrayBufferView): DeviceBuffer {
    const buf = new DeviceBuffer(this, Math.max(data.byteLength, 1), false);
    buf.write(data);
    return buf;
  }

  dispose(): void {
    if (this.#ptr !== null) {
      this.lib.symbols.ql_ctx_destroy(this.#ptr);
      this.#ptr = null;
    }
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A block of device memory from ql_alloc. */
export class DeviceBuffer implements Disposable {
  #ptr: Deno.PointerObject | null;
  readonly ctx: Context;
  readonly bytes: number;

  constructor(ctx: Context, bytes: number, zero: boolean) {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new RangeError(`buffer size must be a positive integer (got ${bytes})`);
    this.ctx = ctx;
    this.bytes = bytes;
    const cell = new BigUint64Array(1);
    ctx.lib.check(ctx.lib.symbols.ql_alloc(ctx.ptr, BigInt(bytes), cell), "ql_alloc");
    this.#ptr = outPointer(cell);
    if (zero) ctx.lib.check(ctx.lib.symbols.ql_fill_zero(ctx.ptr, this.#ptr, BigInt(bytes)), "ql_fill_zero");
  }

  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("DeviceBuffer is disposed");
    return this.#ptr;
  }

  /** Pointer to byteOffset bytes into the buffer. */
  at(byteOffset: number): Deno.PointerObject {
    if (byteOffset < 0 || byteOffset > this.bytes) throw new RangeError(`offset ${byteOffset} outside buffer of ${this.bytes} bytes`);
    return byteOffset === 0 ? this.ptr : Deno.UnsafePointer.offset(this.ptr, byteOffset) as Deno.PointerObject;
  }

  write(data: ArrayBufferView, byteOffset = 0): void {
    if (byteOffset + data.byteLength > this.bytes) {
      throw new RangeError(`write of ${data.byteLength} bytes at ${byteOffset} overruns ${this.bytes}`);
    }
    if (data.byteLength === 0) return;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.ctx.lib.check(
      this.ctx.lib.symbols.ql_copy_to_device(this.ctx.ptr, this.at(byteOffset), bytes, BigInt(bytes.length)),
      "ql_copy_to_device",
    );
  }

  /** Copies bytes [byteOffset, byteOffset + length) to a new host array. */
  readBytes(byteOffset = 0, length = this.bytes - byteOffset): Uint8Array {
    if (byteOffset < 0 || length < 0 || byteOffset + length > this.bytes) throw new RangeError("read outside buffer");
    const out = new Uint8Array(length);
    if (length > 0) {
      this.ctx.lib.check(this.ctx.lib.symbols.ql_copy_to_host(this.ctx.ptr, out, this.at(byteOffset), BigInt(length)), "ql_copy_to_host");
    }
    return out;
  }

  readF32(byteOffset = 0, count = (this.bytes - byteOffset) >> 2): Float32Array {
    return new Float32Array(this.readBytes(byteOffset, count * 4).buffer);
  }
  readI32(byteOffset = 0, count = (this.bytes - byteOffset) >> 2): Int32Array {
    return new Int32Array(this.readBytes(byteOffset, count * 4).buffer);
  }
  readU16(byteOffset = 0, count = (this.bytes - byteOffset) >> 1): Uint16Array {
    return new Uint16Array(this.readBytes(byteOffset, count * 2).buffer);
  }

  /** Zero-copy view of the buffer (CPU backends only): valid until dispose. */
  view(): ArrayBuffer {
    if (!this.ctx.hostVisible) throw new Error(`buffers of the ${this.ctx.backend} backend are not host-visible`);
    return Deno.UnsafePointerView.getArrayBuffer(this.ptr, this.bytes);
  }

  dispose(): void {
    if (this.#ptr !== null) {
      this.ctx.lib.symbols.ql_free(this.ctx.ptr, this.#ptr);
      this.#ptr = null;
    }
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface QWeightInfo {
  rows: number;
  cols: number;
  quantType: number;
  blocksize: number;
  doubleQuant: boolean;
  nestedBlocksize: number;
  packedBytes: number;
  constantBytes: number;
}

/** bitsandbytes' serialized form of a 4-bit weight. */
export interface BnbQuantState {
  packed: Uint8Array;
  absmax: Float32Array; // float absmax (dequantized when double-quantized)
  nested?: { qabsmax: Uint8Array; absmax2: Float32Array; offset: number; blocksize: number };
}

/** A frozen 4-bit weight [rows, cols]. */
export class QWeight implements Disposable {
  #ptr: Deno.PointerObject | null;
  readonly ctx: Context;
  readonly info: QWeightInfo;

  private constructor(ctx: Context, ptr: Deno.PointerObject) {
    this.ctx = ctx;
    this.#ptr = ptr;
    const out = new BigInt64Array(8);
    ctx.lib.check(ctx.lib.symbols.ql_qweight_info(ptr, out), "ql_qweight_info");
    const [rows, cols, quantType, blocksize, dq, nbs, pb, cb] = Array.from(out, Number);
    this.info = { rows, cols, quantType, blocksize, doubleQuant: dq === 1, nestedBlocksize: nbs, packedBytes: pb, constantBytes: cb };
  }

  /** Quantizes host weights w [rows, cols] (F32, BF16 or F16 bits). */
  static quantize(
    ctx: Context,
    w: Float32Array | Uint16Array,
    dtype: DType,
    rows: number,
    cols: number,
    opts: { quantType?: QuantTypeName; blocksize?: number; doubleQuant?: boolean } = {},
  ): QWeight {
    if (w.length !== rows * cols) throw new RangeError(`weight has ${w.length} elements, expected ${rows}x${cols}`);
    const cell = new BigUint64Array(1);
    ctx.lib.check(
      ctx.lib.symbols.ql_qweight_quantize(
        ctx.ptr,
        w,
        dtype,
        BigInt(rows),
        BigInt(cols),
        QuantType[opts.quantType ?? "nf4"],
        opts.blocksize ?? 64,
        opts.doubleQuant === false ? 0 : 1,
        cell,
      ),
      "ql_qweight_quantize",
    );
    return new QWeight(ctx, outPointer(cell));
  }

  /** Builds a weight from bitsandbytes' serialized arrays. */
  static import(
    ctx: Context,
    rows: number,
    cols: number,
    quantType: QuantTypeName,
    blocksize: number,
    state: {
      packed: Uint8Array;
      absmax?: Float32Array;
      nested?: { qabsmax: Uint8Array; absmax2: Float32Array; offset: number; blocksize: number };
      code: Float32Array;
    },
  ): QWeight {
    const cell = new BigUint64Array(1);
    ctx.lib.check(
      ctx.lib.symbols.ql_qweight_import(
        ctx.ptr,
        BigInt(rows),
        BigInt(cols),
        QuantType[quantType],
        blocksize,
        state.packed,
        state.nested ? null : (state.absmax ?? null),
        state.nested?.qabsmax ?? null,
        state.nested?.absmax2 ?? null,
        state.nested?.offset ?? 0,
        state.nested?.blocksize ?? 256,
        state.code,
        cell,
      ),
      "ql_qweight_import",
    );
    return new QWeight(ctx, outPointer(cell));
  }

  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("QWeight is disposed");
    return this.#ptr;
  }

  get blocks(): number {
    return Math.ceil((this.info.rows * this.info.cols) / this.info.blocksize);
  }

  /** bitsandbytes' layout of this weight. */
  /** The mean subtracted before the absmax were quantized (double quantization only). */
  nestedOffset(): number {
    if (!this.info.doubleQuant) throw new Error("the weight has no double quantization");
    const offset = new Float32Array(1);
    this.ctx.lib.check(
      this.ctx.lib.symbols.ql_qweight_export(this.ctx.ptr, this.ptr, null, null, null, null, offset),
      "ql_qweight_export",
    );
    return offset[0];
  }

  export(): BnbQuantState {
    const packed = new Uint8Array(Math.ceil((this.info.rows * this.info.cols) / 2));
    const absmax = new Float32Array(this.blocks);
    let nested: BnbQuantState["nested"];
    let qabsmax: Uint8Array | null = null, absmax2: Float32Array | null = null, offset: Float32Array | null = null;
    if (this.info.doubleQuant) {
      qabsmax = new Uint8Array(this.blocks);
      absmax2 = new Float32Array(Math.ceil(this.blocks / this.info.nestedBlocksize));
      offset = new Float32Array(1);
    }
    this.ctx.lib.check(
      this.ctx.lib.symbols.ql_qweight_export(this.ctx.ptr, this.ptr, packed, absmax, qabsmax, absmax2, offset),
      "ql_qweight_export",
    );
    if (qabsmax && absmax2 && offset) nested = { qabsmax, absmax2, offset: offset[0], blocksize: this.info.nestedBlocksize };
    return { packed, absmax, nested };
  }

  /** Dequantized weight into a device buffer of rows*cols elements of dtype. */
  dequantizeInto(out: DeviceBuffer, dtype: DType = DType.F32): void {
    this.ctx.lib.check(this.ctx.lib.symbols.ql_qweight_dequantize(this.ctx.ptr, out.ptr, this.ptr, dtype), "ql_qweight_dequantize");
  }

  dispose(): void {
    if (this.#ptr !== null) {
      this.ctx.lib.symbols.ql_qweight_destroy(this.#ptr);
      this.#ptr = null;
    }
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}
