// cache.ts — adapters resident on the device, in an LRU bounded in bytes (runs where the engine
// runs). acquire() loads an adapter on demand and pins it; release() unpins it. A pinned adapter
// (in use by a running sequence) is never evicted; unload() of a pinned adapter frees it when its
// last sequence finishes. Keys are registration uids, so a re-registered name never sees stale
// weights.
import type { Context, DeviceBuffer } from "../ffi/tensor.ts";
import type { LlamaShape, LoraModule } from "../model/llama.ts";
import { ADAPTER_WEIGHTS, checkFinite, inspectPeftAdapter, PeftError, readPeftAdapter } from "./peft.ts";

export interface ResidentModule {
  a: bigint; // device address of A [r, in] f32
  b: bigint; // device address of B [out, r] f32
  rank: number;
  scale: number;
}

export interface ResidentAdapter {
  uid: string;
  bytes: number;
  refs: number;
  lastUsed: number;
  /** Unloaded while pinned: freed when refs reaches 0. */
  doomed: boolean;
  /** One device allocation holding every A and B. */
  buf: DeviceBuffer | null;
  modules: Map<string, ResidentModule>; // `${layer}.${module}`
}

export const moduleKey = (layer: number, module: LoraModule): string => `${layer}.${module}`;

export class AdapterCache {
  readonly #entries = new Map<string, ResidentAdapter>(); // insertion order = recency
  readonly #loading = new Map<string, Promise<ResidentAdapter>>();
  /** Bumped whenever an adapter is freed (binders drop cached pointer tables). */
  version = 0;
  loads = 0;
  evictions = 0;

  constructor(readonly ctx: Context, readonly shape: LlamaShape, readonly budgetBytes: number) {}

  get bytes(): number {
    let b = 0;
    for (const e of this.#entries.values()) b += e.bytes;
    return b;
  }
  get size(): number {
    return this.#entries.size;
  }
  ids(): string[] {
    return [...this.#entries.keys()];
  }
  get(uid: string): ResidentAdapter | undefined {
    return this.#entries.get(uid);
  }

  /** Makes the adapter resident (loading it from `dir` if needed) and pins it. */
  async acquire(uid: string, dir: string): Promise<ResidentAdapter> {
    let e = this.#entries.get(uid);
    if (!e || e.doomed) {
      if (e?.doomed) this.#entries.delete(uid); // still pinned by old requests elsewhere: keep their buffers alive via refs
      let p = this.#loading.get(uid);
      if (!p) {
        p = this.#load(uid, dir).finally(() => this.#loading.delete(uid));
        this.#loading.set(uid, p);
      }
      e = await p;
    }
    e.refs++;
    this.#touch(e);
    return e;
  }

  release(uid: string, entry?: ResidentAdapter): void {
    const e = entry ?? this.#entries.get(uid);
    if (!e) return;
    e.refs = Math.max(0, e.refs - 1);
    if (e.refs === 0 && e.doomed) this.#free(e);
  }

  /** Removes the adapter; a pinned one is freed when its last request finishes. */
  unload(uid: string): boolean {
    const e = this.#entries.get(uid);
    if (!e) return false;
    if (e.refs > 0) e.doomed = true;
    else this.#free(e);
    return true;
  }

  dispose(): void {
    for (const e of [...this.#entries.values()]) this.#free(e);
  }

  #touch(e: ResidentAdapter): void {
    e.lastUsed = performance.now();
    if (this.#entries.get(e.uid) === e) {
      this.#entries.delete(e.uid);
      this.#entries.set(e.uid, e);
    }
  }

  #free(e: ResidentAdapter): void {
    e.buf?.dispose();
    e.buf = null;
    e.modules.clear();
    if (this.#entries.get(e.uid) === e) this.#entries.delete(e.uid);
    this.version++;
  }

  async #load(uid: string, dir: string): Promise<ResidentAdapter> {
    const info = await inspectPeftAdapter(dir, this.shape);
    // evict least recently used, unpinned adapters until the new one fits
    for (const e of [...this.#entries.values()]) {
      if (this.bytes + info.deviceBytes <= this.budgetBytes) break;
      if (e.refs === 0) {
        this.#free(e);
        this.evictions++;
      }
    }
    const modules = new Map<string, ResidentModule>();
    const allF32 = info.modules.every((m) => m.aDtype === "F32" && m.bDtype === "F32");
    let buf: DeviceBuffer;
    if (allF32 && this.ctx.hostVisible) {
      // Host-visible device memory and f32 tensors: read the file's data section straight into
      // the device buffer (one copy, no conversion); the modules point into it.
      const size = info.fileSize - info.dataStart;
      buf = this.ctx.alloc(Math.max(size, 4));
      try {
        const view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(buf.ptr, size));
        using file = await Deno.open(`${dir}/${ADAPTER_WEIGHTS}`, { read: true });
        if ((await file.stat()).size !== info.fileSize) throw new PeftError(`${ADAPTER_WEIGHTS} changed while it was read`);
        await file.seek(info.dataStart, Deno.SeekMode.Start);
        for (let off = 0; off < size;) {
          const n = await file.read(view.subarray(off));
          if (n === null || n === 0) throw new PeftError(`${ADAPTER_WEIGHTS} is truncated`);
          off += n;
        }
        // as readPeftAdapter does on the other path: every weight finite, checked where it will be used
        checkFinite(new Float32Array(view.buffer, view.byteOffset, size / 4), ADAPTER_WEIGHTS);
      } catch (err) {
        buf.dispose();
        throw err;
      }
      const base = BigInt(Deno.UnsafePointer.value(buf.ptr)) - BigInt(info.dataStart);
      for (const m of info.modules) {
        modules.set(moduleKey(m.layer, m.module), {
          a: base + BigInt(m.aOffset),
          b: base + BigInt(m.bOffset),
          rank: m.rank,
          scale: m.scale,
        });
      }
    } else {
      buf = this.ctx.alloc(info.deviceBytes);
      const base = BigInt(Deno.UnsafePointer.value(buf.ptr));
      let off = 0;
      try {
        await readPeftAdapter(dir, this.shape, (m, w) => {
          const aOff = off;
          buf.write(w.a, aOff);
          off += w.a.byteLength;
          const bOff = off;
          buf.write(w.b, bOff);
          off += w.b.byteLength;
          modules.set(moduleKey(m.layer, m.module), { a: base + BigInt(aOff), b: base + BigInt(bOff), rank: m.rank, scale: m.scale });
        });
      } catch (err) {
        buf.dispose();
        throw err;
      }
    }
    const e: ResidentAdapter = { uid, bytes: info.deviceBytes, refs: 0, lastUsed: performance.now(), doomed: false, buf, modules };
    this.#entries.set(uid, e);
    this.loads++;
    return e;
  }
}
