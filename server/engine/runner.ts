// runner.ts — the model runner: the only engine part that touches the model. Turns a step's
// chunks into one forward batch on the paged KV cache and returns each chunk's last logits.
import type { BatchAdapters, KvCache, LlamaModel } from "../model/llama.ts";
import type { BlockManager } from "./kv_blocks.ts";
import type { ScheduledChunk } from "./scheduler.ts";

/** Maps a step's sequences to LoRA adapter slots (the serving layer provides it). */
export interface AdapterBinder {
  bind(chunks: ScheduledChunk[], rowSeq: Int32Array): BatchAdapters | undefined;
}

export class ModelRunner {
  constructor(
    readonly model: LlamaModel,
    readonly cache: KvCache,
    readonly blocks: BlockManager,
    readonly adapters?: AdapterBinder,
  ) {}

  /** Computes the chunks' tokens; returns the logits [vocab] after each chunk's last token, for
   * the chunks that reach their sequence's end (null for a prompt chunk with more to come). */
  run(chunks: ScheduledChunk[]): (Float32Array | null)[] {
    if (chunks.length === 0) return [];
    let T = 0;
    for (const c of chunks) T += c.end - c.start;
    const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T), rowSeq = new Int32Array(T);
    const S = chunks.length;
    let maxBlocks = 1;
    for (const c of chunks) maxBlocks = Math.max(maxBlocks, c.seq.blockTable.length);
    const blockTables = new Int32Array(S * maxBlocks), qStart = new Int32Array(S + 1), ctxLens = new Int32Array(S);
    const logitRows: number[] = [], logitIndex = new Int32Array(S).fill(-1);
    let t = 0;
    chunks.forEach((c, i) => {
      const ids = c.seq.tokenIds;
      slots.set(this.blocks.slotMapping(c.seq, c.start, c.end), t);
      for (let p = c.start; p < c.end; p++, t++) {
        tokens[t] = ids[p];
        positions[t] = p;
        rowSeq[t] = i;
      }
      qStart[i + 1] = t;
      ctxLens[i] = c.end;
      if (c.end === c.seq.length) {
        logitIndex[i] = logitRows.length;
        logitRows.push(t - 1);
      }
      blockTables.set(c.seq.blockTable, i * maxBlocks);
    });
    const logits = this.model.forward(
      {
        tokens,
        positions,
        slots,
        paged: { blockTables, qStart, ctxLens, S, maxBlocks },
        logitRows: Int32Array.from(logitRows),
        adapters: this.adapters?.bind(chunks, rowSeq),
      },
      this.cache,
    );
    for (const c of chunks) c.seq.numComputedTokens = c.end;
    const V = this.model.shape.vocab;
    return chunks.map((_, i) => logitIndex[i] < 0 ? null : logits.subarray(logitIndex[i] * V, (logitIndex[i] + 1) * V));
  }
}
