// runner.ts — the model runner: the only engine part that touches the model. Turns a step's
// chunks into one forward batch on the paged KV cache and returns each chunk's last logits (all of a
// chunk's rows for a sequence that asks for its prompt's logprobs).
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
   * the chunks that reach their sequence's end (null for a prompt chunk with more to come); for a
   * sequence that wants its prompt's logits (its whole prompt is one chunk), [rows × vocab]: every
   * row of its chunk (the last one is the next token's). Positions already in the cache (a
   * prefix-cache hit) are not written again. */
  run(chunks: ScheduledChunk[]): (Float32Array | null)[] {
    if (chunks.length === 0) return [];
    let T = 0;
    for (const c of chunks) T += c.end - c.start;
    const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T), rowSeq = new Int32Array(T);
    const S = chunks.length;
    let maxBlocks = 1;
    for (const c of chunks) maxBlocks = Math.max(maxBlocks, c.seq.blockTable.length);
    const blockTables = new Int32Array(S * maxBlocks), qStart = new Int32Array(S + 1), ctxLens = new Int32Array(S);
    const rows: number[] = [];
    const rowCounts = new Int32Array(S); // logit rows per chunk: 0 (a prompt chunk with more to come), 1, or all
    let t = 0;
    chunks.forEach((c, i) => {
      const ids = c.seq.tokenIds;
      const all = c.seq.wantsPromptLogits && c.end === c.seq.length;
      slots.set(this.blocks.slotMapping(c.seq, c.start, c.end), t);
      for (let p = c.start; p < c.end; p++, t++) {
        tokens[t] = ids[p];
        positions[t] = p;
        rowSeq[t] = i;
        if (p < c.seq.numCachedTokens) slots[t] = -1; // its KV is in the cache already
        if (all && p < c.end - 1) rows.push(t);
      }
      qStart[i + 1] = t;
      ctxLens[i] = c.end;
      if (c.end === c.seq.length) {
        rows.push(t - 1);
        rowCounts[i] = all ? c.end - c.start : 1;
      }
      blockTables.set(c.seq.blockTable, i * maxBlocks);
    });
    const logitRows = Int32Array.from(rows);
    const logits = this.model.forward(
      {
        tokens,
        positions,
        slots,
        paged: { blockTables, qStart, ctxLens, S, maxBlocks },
        logitRows,
        adapters: this.adapters?.bind(chunks, rowSeq),
      },
      this.cache,
    );
    for (const c of chunks) c.seq.numComputedTokens = c.end;
    const V = this.model.shape.vocab;
    let r = 0;
    return chunks.map((_, i) => rowCounts[i] === 0 ? null : logits.subarray(r * V, (r += rowCounts[i]) * V));
  }
}
