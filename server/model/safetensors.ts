// safetensors.ts — a validating reader and an atomic writer for the safetensors format.
//
// Layout: 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON (an object mapping
// tensor names to {dtype, shape, data_offsets}, plus an optional "__metadata__" string map),
// then the data buffer. Validation follows the format's reference implementation
// (huggingface/safetensors `Metadata::validate`): header ≤ 100 MB, offsets contiguous from 0
// (sorted by begin, no gaps, no overlaps), each byte size == numel × dtype size, and the last end
// equals the data buffer length. Every check happens before any tensor byte is read, so a hostile
// file gets a SafetensorsError and never an out-of-bounds read.
//
// Reading uses one Deno.FsFile per file (seek + read per tensor); reads on one file are
// serialized, and only the requested tensor is ever held in memory.

export const MAX_HEADER_SIZE = 100_000_000;

/** Bytes per element for the dtypes we accept (sub-byte float formats are not supported). */
export const DTYPE_SIZES: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
});

export type SafetensorsDType = keyof typeof DTYPE_SIZES | string;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  byteOffset: number;
  byteLength: number;
  /** Number of elements (product of shape; 1 for a scalar). */
  numel: number;
}

export class SafetensorsError extends Error {
  constructor(message: string, readonly path?: string) {
    super(path ? `${path}: ${message}` : message);
    this.name = "SafetensorsError";
  }
}

export interface ParsedHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  headerLength: number;
  dataOffset: number;
}

/**
 * Validates a header (the JSON text already decoded) against the total file size.
 * Pure function: used by the reader and directly testable.
 */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, path?: string): ParsedHeader {
  const fail = (msg: string): never => {
    throw new SafetensorsError(msg, path);
  };
  const headerLength = headerBytes.length;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) fail("header must be a JSON object");
  const obj = json as Record<string, unknown>;
  const metadata: Record<string, string> = {};
  const entries: TensorInfo[] = [];
  const dataOffset = 8 + headerLength;
  const seen = new Set<string>();
  for (const [name, raw] of Object.entries(obj)) {
    // JSON.parse silently keeps the last of duplicate keys; duplicates are found by a scan below.
    seen.add(name);
    if (name === "__metadata__") {
      if (raw === null) continue;
      if (typeof raw !== "object" || Array.isArray(raw)) fail(`"__metadata__" must be an object of strings`);
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`"__metadata__"."${k}" must be a string, got ${typeof v}`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) fail(`tensor "${name}" must be an object`);
    const t = raw as Record<string, unknown>;
    for (const key of Object.keys(t)) {
      if (key !== "dtype" && key !== "shape" && key !== "data_offsets") fail(`tensor "${name}" has unknown field "${key}"`);
    }
    const dtype = t.dtype;
    if (typeof dtype !== "string") fail(`tensor "${name}" is missing a string "dtype"`);
    const size = DTYPE_SIZES[dtype as string];
    if (size === undefined) fail(`tensor "${name}" has unknown dtype "${dtype}"`);
    const shape = t.shape;
    if (!Array.isArray(shape)) fail(`tensor "${name}" is missing a "shape" array`);
    let numel = 1;
    for (const d of shape as unknown[]) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
        fail(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)} (dimensions must be non-negative integers)`);
      }
      numel *= d as number;
      if (!Number.isSafeInteger(numel)) fail(`tensor "${name}" shape ${JSON.stringify(shape)} overflows`);
    }
    const offs = t.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2) fail(`tensor "${name}" needs "data_offsets": [begin, end]`);
    const [begin, end] = offs as unknown[];
    if (
      typeof begin !== "number" || typeof end !== "number" || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) ||
      begin < 0 || end < begin
    ) {
      fail(`tensor "${name}" has invalid data_offsets ${JSON.stringify(offs)}`);
    }
    const byteLength = numel * size!;
    if (!Number.isSafeInteger(byteLength)) fail(`tensor "${name}" is too large`);
    if ((end as number) - (begin as number) !== byteLength) {
      fail(
        `tensor "${name}" (${dtype} ${JSON.stringify(shape)}) needs ${byteLength} bytes but data_offsets ` +
          `${JSON.stringify(offs)} span ${(end as number) - (begin as number)}`,
      );
    }
    entries.push({
      name,
      dtype: dtype as string,
      shape: (shape as number[]).slice(),
      byteOffset: dataOffset + (begin as number),
      byteLength,
      numel,
    });
  }
  // Duplicate names: JSON.parse would keep the last silently, so count top-level keys ourselves.
  const dup = findDuplicateTopLevelKey(text);
  if (dup !== null) fail(`duplicate tensor name "${dup}" in header`);

  entries.sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
  let expected = dataOffset;
  for (const e of entries) {
    if (e.byteOffset !== expected) {
      const rel = e.byteOffset - dataOffset;
      const what = e.byteOffset < expected ? "overlaps the previous tensor" : "leaves a gap after the previous tensor";
      fail(`tensor "${e.name}" starts at data offset ${rel}, expected ${expected - dataOffset}: it ${what}`);
    }
    expected += e.byteLength;
  }
  if (expected !== fileSize) {
    fail(
      `tensor data ends at byte ${expected} but the file has ${fileSize} bytes ` +
        (expected > fileSize ? "(file is truncated)" : "(trailing bytes after the last tensor)"),
    );
  }
  const tensors = new Map<string, TensorInfo>();
  for (const e of entries) tensors.set(e.name, e);
  return { tensors, metadata, headerLength, dataOffset };
}

/** Scans a JSON object's text for a repeated top-level key (string-aware, depth-aware). */
function findDuplicateTopLevelKey(text: string): string | null {
  const keys = new Set<string>();
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") {
      depth++;
      if (depth === 1 && c === "{") expectKey = true;
    } else if (c === "}" || c === "]") depth--;
    else if (c === "," && depth === 1) expectKey = true;
    i++;
  }
  return null;
}

async function readFully(file: Deno.FsFile, buf: Uint8Array, position: number): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let off = 0;
  while (off < buf.length) {
    const n = await file.read(buf.subarray(off));
    if (n === null || n === 0) throw new SafetensorsError(`unexpected end of file at byte ${position + off}`);
    off += n;
  }
}

/** One open safetensors file. */
export class SafetensorsFile {
  #file: Deno.FsFile | null;
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly path: string,
    file: Deno.FsFile,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
    readonly fileSize: number,
  ) {
    this.#file = file;
  }

  static async open(path: string): Promise<SafetensorsFile> {
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      if (size < 8) throw new SafetensorsError(`file is too short (${size} bytes) to hold a header length`, path);
      const lenBuf = new Uint8Array(8);
      await readFully(file, lenBuf, 0);
      const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_SIZE)) {
        throw new SafetensorsError(`header length ${n} exceeds the ${MAX_HEADER_SIZE}-byte limit`, path);
      }
      const headerLength = Number(n);
      if (8 + headerLength > size) {
        throw new SafetensorsError(`header length ${headerLength} runs past the end of the ${size}-byte file (truncated?)`, path);
      }
      const header = new Uint8Array(headerLength);
      await readFully(file, header, 8);
      const parsed = parseHeader(header, size, path);
      return new SafetensorsFile(path, file, parsed.tensors, parsed.metadata, size);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`no tensor named "${name}"`, this.path);
    return t;
  }

  /** Reads one tensor's raw little-endian bytes into a fresh buffer. */
  async read(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const buf = new Uint8Array(t.byteLength);
    await this.readInto(name, buf);
    return buf;
  }

  /** Reads one tensor's bytes into `dst` (which must be at least byteLength long). */
  readInto(name: string, dst: Uint8Array): Promise<void> {
    const t = this.info(name);
    if (dst.length < t.byteLength) {
      return Promise.reject(new SafetensorsError(`buffer of ${dst.length} bytes is too small for "${name}" (${t.byteLength})`));
    }
    const run = this.#lock.then(async () => {
      const f = this.#file;
      if (!f) throw new SafetensorsError("file is closed", this.path);
      await readFully(f, dst.subarray(0, t.byteLength), t.byteOffset);
    });
    this.#lock = run.catch(() => {});
    return run;
  }

  /** Reads an F32/F16/BF16 tensor as Float32Array (convenience for small tensors and tests). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    return toFloat32(await this.read(name), t.dtype);
  }

  close(): void {
    if (this.#file) {
      this.#file.close();
      this.#file = null;
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Converts raw little-endian F32/F16/BF16 bytes to Float32Array. */
export function toFloat32(bytes: Uint8Array, dtype: SafetensorsDType): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "F32") {
    const out = new Float32Array(bytes.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(i * 4, true);
    return out;
  }
  if (dtype === "BF16") {
    const out = new Float32Array(bytes.byteLength / 2);
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < out.length; i++) u[i] = dv.getUint16(i * 2, true) << 16;
    return out;
  }
  if (dtype === "F16") {
    const out = new Float32Array(bytes.byteLength / 2);
    for (let i = 0; i < out.length; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
    return out;
  }
  throw new SafetensorsError(`cannot convert dtype ${dtype} to float32`);
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Float32 → bfloat16 (round to nearest even), as raw little-endian bytes. */
export function float32ToBf16Bytes(x: Float32Array): Uint8Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint8Array(x.length * 2);
  for (let i = 0; i < x.length; i++) {
    const v = u[i];
    let h: number;
    if ((v & 0x7fffffff) > 0x7f800000) h = (v >>> 16) | 0x40; // NaN stays NaN
    else h = (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = (h >>> 8) & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sharded model folders

/** A model's weights across one or more safetensors files (model.safetensors or an index). */
export class SafetensorsModel {
  private constructor(
    readonly dir: string,
    readonly files: SafetensorsFile[],
    private readonly owner: Map<string, SafetensorsFile>,
  ) {}

  /**
   * Opens `dir/model.safetensors.index.json` (weight_map name → shard) if present, else
   * `dir/model.safetensors`. Every tensor in the index must exist in its shard.
   */
  static async open(dir: string): Promise<SafetensorsModel> {
    const indexPath = `${dir}/model.safetensors.index.json`;
    let index: unknown = null;
    try {
      index = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw new SafetensorsError(`cannot read index: ${(e as Error).message}`, indexPath);
    }
    const files: SafetensorsFile[] = [];
    const owner = new Map<string, SafetensorsFile>();
    try {
      if (index === null) {
        const f = await SafetensorsFile.open(`${dir}/model.safetensors`);
        files.push(f);
        for (const n of f.tensors.keys()) owner.set(n, f);
      } else {
        const wm = (index as { weight_map?: unknown }).weight_map;
        if (!wm || typeof wm !== "object" || Array.isArray(wm)) throw new SafetensorsError(`missing "weight_map" object`, indexPath);
        const byShard = new Map<string, SafetensorsFile>();
        for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
          if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\") || shard.startsWith(".")) {
            throw new SafetensorsError(`weight_map["${name}"] is not a plain file name`, indexPath);
          }
          let f = byShard.get(shard);
          if (!f) {
            f = await SafetensorsFile.open(`${dir}/${shard}`);
            byShard.set(shard, f);
            files.push(f);
          }
          if (!f.tensors.has(name)) throw new SafetensorsError(`tensor "${name}" listed in the index is missing from ${shard}`, indexPath);
          owner.set(name, f);
        }
      }
    } catch (e) {
      for (const f of files) f.close();
      throw e;
    }
    return new SafetensorsModel(dir, files, owner);
  }

  get names(): string[] {
    return [...this.owner.keys()];
  }

  /** The file holding a tensor (its info's byteOffset is into that file). */
  pathOf(name: string): string {
    const f = this.owner.get(name);
    if (!f) throw new SafetensorsError(`no tensor named "${name}"`, this.dir);
    return f.path;
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  info(name: string): TensorInfo {
    const f = this.owner.get(name);
    if (!f) throw new SafetensorsError(`no tensor named "${name}"`, this.dir);
    return f.info(name);
  }

  read(name: string): Promise<Uint8Array> {
    const f = this.owner.get(name);
    if (!f) return Promise.reject(new SafetensorsError(`no tensor named "${name}"`, this.dir));
    return f.read(name);
  }

  readInto(name: string, dst: Uint8Array): Promise<void> {
    const f = this.owner.get(name);
    if (!f) return Promise.reject(new SafetensorsError(`no tensor named "${name}"`, this.dir));
    return f.readInto(name, dst);
  }

  readF32(name: string): Promise<Float32Array> {
    const f = this.owner.get(name);
    if (!f) return Promise.reject(new SafetensorsError(`no tensor named "${name}"`, this.dir));
    return f.readF32(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** The bytes, or a producer called once, in order, while writing (streams large models). */
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

/** Float32Array → a F32 TensorToWrite. */
export function f32Tensor(name: string, shape: number[], values: Float32Array): TensorToWrite {
  return { name, dtype: "F32", shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/**
 * Writes a safetensors file atomically (temp file in the same folder, fsync, rename).
 * `tensorsIn` is a list or a name → tensor record. Tensors are stored in the given order; data producers are called one at a time so only one
 * tensor is in memory. The header is padded with spaces to a multiple of 8 bytes.
 */
export async function writeSafetensors(
  path: string,
  tensorsIn: TensorToWrite[] | Record<string, Omit<TensorToWrite, "name">>,
  metadata?: Record<string, string>,
): Promise<void> {
  const tensors: TensorToWrite[] = Array.isArray(tensorsIn) ? tensorsIn : Object.entries(tensorsIn).map(([name, t]) => ({ name, ...t }));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new SafetensorsError(`metadata "${k}" must be a string`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    if (t.name === "__metadata__") throw new SafetensorsError(`"__metadata__" is not a valid tensor name`);
    if (t.name in header) throw new SafetensorsError(`duplicate tensor name "${t.name}"`);
    const size = DTYPE_SIZES[t.dtype];
    if (size === undefined) throw new SafetensorsError(`unknown dtype "${t.dtype}" for "${t.name}"`);
    let numel = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) throw new SafetensorsError(`invalid shape ${JSON.stringify(t.shape)} for "${t.name}"`);
      numel *= d;
    }
    const n = numel * size;
    if (t.data instanceof Uint8Array && t.data.byteLength !== n) {
      throw new SafetensorsError(`"${t.name}": ${t.data.byteLength} bytes given, shape needs ${n}`);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    sizes.push(n);
    offset += n;
  }
  let headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(headerBytes.length / 8) * 8;
  if (padded !== headerBytes.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(headerBytes);
    headerBytes = p;
  }
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  const base = path.slice(path.lastIndexOf("/") + 1);
  const tmp = `${dir}/.${base}.tmp-${crypto.randomUUID()}`;
  const file = await Deno.open(tmp, { write: true, createNew: true });
  try {
    const lenBuf = new Uint8Array(8);
    new DataView(lenBuf.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
    await writeAll(file, lenBuf);
    await writeAll(file, headerBytes);
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const data = t.data instanceof Uint8Array ? t.data : await t.data();
      if (data.byteLength !== sizes[i]) {
        throw new SafetensorsError(`"${t.name}": producer gave ${data.byteLength} bytes, shape needs ${sizes[i]}`);
      }
      await writeAll(file, data);
    }
    await file.sync();
    file.close();
    await Deno.rename(tmp, path);
  } catch (e) {
    try {
      file.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}
