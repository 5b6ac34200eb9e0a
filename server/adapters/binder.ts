// binder.ts — the engine's AdapterBinder over the adapter cache: for each step, the distinct
// adapters of the batch become slots of the multi-adapter LoRA op, and every token row points at
// its sequence's slot (-1 for the base model). An adapter without a given module gets a zero
// rank-1 pair with scale 0 for that module, which leaves its rows unchanged.
import type { DeviceBuffer } from "../ffi/tensor.ts";
import type { AdapterSlots } from "../ffi/ops.ts";
import type { BatchAdapters, LoraModule } from "../model/llama.ts";
import type { AdapterBinder } from "../engine/runner.ts";
import type { ScheduledChunk } from "../engine/scheduler.ts";
import { type AdapterCache, moduleKey, type ResidentAdapter } from "./cache.ts";

export class CacheBinder implements AdapterBinder {
  #zero: DeviceBuffer;
  #key = "";
  #table = new Map<string, AdapterSlots | null>();

  constructor(readonly cache: AdapterCache) {
    const s = cache.shape;
    const n = Math.max(s.hidden, s.intermediate, s.heads * s.headDim, s.kvHeads * s.headDim);
    this.#zero = cache.ctx.alloc(n * 4, true);
  }

  bind(chunks: ScheduledChunk[], rowSeq: Int32Array): BatchAdapters | undefined {
    const uids: string[] = [];
    const chunkSlot = new Int32Array(chunks.length).fill(-1);
    chunks.forEach((c, i) => {
      const uid = c.seq.adapterUid;
      if (uid === null) return;
      let k = uids.indexOf(uid);
      if (k < 0) k = uids.push(uid) - 1;
      chunkSlot[i] = k;
    });
    if (uids.length === 0) return undefined;
    const rowAdapter = new Int32Array(rowSeq.length);
    for (let t = 0; t < rowSeq.length; t++) rowAdapter[t] = chunkSlot[rowSeq[t]];
    const key = `${this.cache.version}|${uids.join("|")}`;
    if (key !== this.#key) {
      this.#key = key;
      this.#table.clear();
    }
    const entries: ResidentAdapter[] = uids.map((u) => {
      const e = this.cache.get(u);
      if (!e || e.modules.size === 0) throw new Error(`adapter ${u} is not resident`);
      return e;
    });
    const zero = BigInt(Deno.UnsafePointer.value(this.#zero.ptr));
    const table = this.#table;
    return {
      rowAdapter,
      slots(layer: number, module: LoraModule): AdapterSlots | null {
        const k = moduleKey(layer, module);
        const hit = table.get(k);
        if (hit !== undefined) return hit;
        const n = entries.length;
        const s: AdapterSlots = {
          aPtrs: new BigUint64Array(n),
          bPtrs: new BigUint64Array(n),
          ranks: new Int32Array(n),
          scales: new Float32Array(n),
        };
        let any = false;
        entries.forEach((e, i) => {
          const m = e.modules.get(k);
          if (m) {
            any = true;
            s.aPtrs[i] = m.a;
            s.bPtrs[i] = m.b;
            s.ranks[i] = m.rank;
            s.scales[i] = m.scale;
          } else {
            s.aPtrs[i] = zero;
            s.bPtrs[i] = zero;
            s.ranks[i] = 1;
            s.scales[i] = 0;
          }
        });
        const out = any ? s : null;
        table.set(k, out);
        return out;
      },
    };
  }

  dispose(): void {
    this.#zero.dispose();
  }
}
