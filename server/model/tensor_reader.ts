// tensor_reader.ts — a model's large tensors read in turn into two reused host buffers, the next
// one (in file order) read ahead while the caller quantizes or uploads the current one. Loading a
// 7B checkpoint is then bound by the slower of the disk and the quantizer instead of their sum,
// and it allocates nothing per tensor: no page-fault storm, no garbage for the collector.
//
// Contract: the bytes read() returns stay valid until the next read() (they live in one of the
// two buffers, and the read-ahead fills the other); close() must be awaited when done, since a
// read ahead may still be writing into a buffer.
import { type Context, type DeviceBuffer } from "../ffi/tensor.ts";
import { readFileInto } from "../ffi/files.ts";
import type { SafetensorsModel } from "./safetensors.ts";

/** Tensors at least this big go through the buffers and are read ahead; smaller ones are read alone. */
const READ_AHEAD_MIN_BYTES = 1 << 20;

export class TensorReader {
  #bufs: [Uint8Array, Uint8Array];
  #owned: DeviceBuffer[] = [];
  /** The big tensors in file order, and each one's successor there. */
  #next = new Map<string, string>();
  #ahead: { name: string; slot: 0 | 1; done: Promise<void> } | null = null;
  /** The slot whose bytes the caller holds (read() returned them last). */
  #held: 0 | 1 = 1;

  constructor(private ctx: Context, private st: SafetensorsModel) {
    const big = st.names.map((n) => ({ n, info: st.info(n), path: st.pathOf(n) }))
      .filter((t) => t.info.byteLength >= READ_AHEAD_MIN_BYTES)
      .sort((a, b) => a.path.localeCompare(b.path) || a.info.byteOffset - b.info.byteOffset);
    for (let i = 0; i + 1 < big.length; i++) this.#next.set(big[i].n, big[i + 1].n);
    const capacity = Math.max(1, ...big.map((t) => t.info.byteLength));
    const buffer = (): Uint8Array => {
      // native memory where the backend's buffers are host memory: freed at dispose, where a
      // JavaScript buffer would stay resident until the collector runs
      if (!ctx.hostVisible) return new Uint8Array(capacity);
      const b = ctx.alloc(capacity);
      this.#owned.push(b);
      return new Uint8Array(b.view());
    };
    this.#bufs = [buffer(), buffer()];
  }

  /** The bytes of tensor `name`, valid until the next call. */
  async read(name: string): Promise<Uint8Array> {
    const info = this.st.info(name);
    if (info.byteLength < READ_AHEAD_MIN_BYTES) return await this.st.read(name);
    let slot: 0 | 1;
    const ahead = this.#ahead;
    this.#ahead = null;
    if (ahead?.name === name) {
      await ahead.done;
      slot = ahead.slot;
    } else {
      // not the one read ahead (the caller skipped or reordered): let that read end, then read this
      if (ahead) await ahead.done.catch(() => {});
      slot = this.#held === 0 ? 1 : 0;
      await this.#fill(name, slot);
    }
    this.#held = slot;
    const next = this.#next.get(name);
    if (next !== undefined) {
      const other: 0 | 1 = slot === 0 ? 1 : 0;
      const done = this.#fill(next, other);
      done.catch(() => {}); // surfaces when (if) it is read
      this.#ahead = { name: next, slot: other, done };
    }
    return this.#bufs[slot].subarray(0, info.byteLength);
  }

  #fill(name: string, slot: 0 | 1): Promise<void> {
    const info = this.st.info(name);
    return readFileInto(this.ctx, this.st.pathOf(name), info.byteOffset, this.#bufs[slot].subarray(0, info.byteLength));
  }

  /** Waits for a read still running (its buffer must not be freed under it), then frees the buffers. */
  async close(): Promise<void> {
    if (this.#ahead) await this.#ahead.done.catch(() => {});
    this.#ahead = null;
    for (const b of this.#owned) b.dispose();
    this.#owned = [];
  }
}
