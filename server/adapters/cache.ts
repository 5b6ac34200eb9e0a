// cache.ts — adapters resident on the device, in an LRU bounded in bytes (runs where the engine
// runs). acquire() loads an adapter on demand and pins it; release() unpins it. A pinned adapter
// (in use by a running sequence) is never evicted; unload() of a pinned adapter frees it when its
// last sequence finishes. Keys are registration uids, so a re-registered name never sees stale
// weights.
import type { Context, DeviceBuffer } from "../ffi/tensor.ts";
import type { LlamaShape, LoraModule } from "../model/llama.ts";
import { inspectPeftAdapter, readPeftAdapter } from "./peft.ts";

export interface ResidentModule {
  a: DeviceBuffer; // [r, in] f32
  b: DeviceBuffer; // [out, r] f32
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
    for (const m of e.modules.values()) {
      m.a.dispose();
      m.b.dispose();
    }
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
    try {
      await readPeftAdapter(dir, this.shape, (m, w) => {
        const a = this.ctx.upload(w.a);
        let b: DeviceBuffer;
        try {
          b = this.ctx.upload(w.b);
        } catch (err) {
          a.dispose();
          throw err;
        }
        modules.set(moduleKey(m.layer, m.module), { a, b, rank: m.rank, scale: m.scale });
      });
    } catch (err) {
      for (const m of modules.values()) {
        m.a.dispose();
        m.b.dispose();
      }
      throw err;
    }
    const e: ResidentAdapter = { uid, bytes: info.deviceBytes, refs: 0, lastUsed: performance.now(), doomed: false, modules };
    this.#entries.set(uid, e);
    this.loads++;
    return e;
  }
}
