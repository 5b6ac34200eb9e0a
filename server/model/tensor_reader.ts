// tensor_reader.ts — a model's large tensors read in turn into two reused host buffers, the next
// one (in file order) read ahead while the caller quantizes or uploads the current one. Loading a
// 7B checkpoint is then bound by the slower of the disk and the quantizer instead of their sum,
// and it allocates nothing per tensor: no page-fault storm, no garbage for the collector. Where
// the buffers are native memory the reads bypass the page cache (O_DIRECT): the disk writes into
// them with no kernel copy competing with the quantizer for the cores, and reading a 13 GB
// checkpoint once does not evict everything else from the page cache.
//
// Contract: the bytes read() returns stay valid until the next read() (they live in one of the
// two buffers, and the read-ahead fills the other); close() must be awaited when done, since a
// read ahead may still be writing into a buffer.
import { type Context, type DeviceBuffer } from "../ffi/tensor.ts";
import { DIRECT_ALIGN, readFileInto, readFileRange } from "../ffi/files.ts";
import type { SafetensorsModel } from "./safetensors.ts";

/** Tensors at least this big go through the buffers and are read ahead; smaller ones are read alone. */
const READ_AHEAD_MIN_BYTES = 1 << 20;

/** Bytes of one of the reader's two buffers, for tensors of at most `largest` bytes. */
function bufferBytes(largest: number, direct: boolean): number {
  // direct reads cover the tensor's aligned superset: up to one alignment unit more at each end
  return Math.max(1, largest) + (direct ? 2 * DIRECT_ALIGN : 0);
}

/**
 * What a reader makes resident while a model loads (the memory planner's load term), from the
 * sizes of the tensors: two buffers of the largest one's size, of which pages become resident as
 * tensors fill them, so at most the two largest tensors' bytes (they may land in either).
 */
export function tensorReaderBytes(tensorBytes: number[]): number {
  const [a = 0, b = 0] = [...tensorBytes].sort((x, y) => y - x);
  return a + b + 4 * DIRECT_ALIGN;
}

export class TensorReader {
  #bufs: [Uint8Array, Uint8Array];
  #owned: DeviceBuffer[] = [];
  /** The big tensors in file order, and each one's successor there. */
  #next = new Map<string, string>();
  #ahead: { name: string; slot: 0 | 1; done: Promise<number> } | null = null;
  /** Read around the page cache (the buffers are native, page-aligned memory). */
  #direct: boolean;
  /** The slot whose bytes the caller holds (read() returned them last). */
  #held: 0 | 1 = 1;

  constructor(private ctx: Context, private st: SafetensorsModel) {
    const big = st.names.map((n) => ({ n, info: st.info(n), path: st.pathOf(n) }))
      .filter((t) => t.info.byteLength >= READ_AHEAD_MIN_BYTES)
      .sort((a, b) => a.path.localeCompare(b.path) || a.info.byteOffset - b.info.byteOffset);
    for (let i = 0; i + 1 < big.length; i++) this.#next.set(big[i].n, big[i + 1].n);
    this.#direct = ctx.hostVisible;
    const capacity = bufferBytes(Math.max(0, ...big.map((t) => t.info.byteLength)), this.#direct);
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
    let slot: 0 | 1, start: number;
    const ahead = this.#ahead;
    this.#ahead = null;
    if (ahead?.name === name) {
      start = await ahead.done;
      slot = ahead.slot;
    } else {
      // not the one read ahead (the caller skipped or reordered): let that read end, then read this
      if (ahead) await ahead.done.catch(() => {});
      slot = this.#held === 0 ? 1 : 0;
      start = await this.#fill(name, slot);
    }
    this.#held = slot;
    const next = this.#next.get(name);
    if (next !== undefined) {
      const other: 0 | 1 = slot === 0 ? 1 : 0;
      const done = this.#fill(next, other);
      done.catch(() => {}); // surfaces when (if) it is read
      this.#ahead = { name: next, slot: other, done };
    }
    return this.#bufs[slot].subarray(start, start + info.byteLength);
  }

  /** Reads tensor `name` into buffer `slot`; resolves to where its bytes start there. */
  async #fill(name: string, slot: 0 | 1): Promise<number> {
    const { byteOffset: offset, byteLength: length } = this.st.info(name);
    const path = this.st.pathOf(name), buf = this.#bufs[slot];
    if (!this.#direct) {
      await readFileInto(this.ctx, path, offset, buf.subarray(0, length));
      return 0;
    }
    const lo = Math.floor(offset / DIRECT_ALIGN) * DIRECT_ALIGN;
    const hi = Math.ceil((offset + length) / DIRECT_ALIGN) * DIRECT_ALIGN;
    const n = await readFileRange(this.ctx, path, lo, buf.subarray(0, hi - lo), true);
    if (n < offset + length - lo) {
      throw new Error(`${path}: unexpected end of file at byte ${lo + n} (tensor ${name} ends at ${offset + length})`);
    }
    return offset - lo;
  }

  /** Waits for a read still running (its buffer must not be freed under it), then frees the buffers. */
  async close(): Promise<void> {
    if (this.#ahead) await this.#ahead.done.catch(() => {});
    this.#ahead = null;
    for (const b of this.#owned) b.dispose();
    this.#owned = [];
  }
}
