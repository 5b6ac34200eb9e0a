// scheduler.ts — decides what runs in each step (policy only; no arithmetic, no native calls).
//
// Continuous batching: every step decodes one token for each running sequence and admits
// waiting sequences (whole prompts) while the step's token budget, the sequence limit and the KV
// blocks allow: preempted sequences first, then the oldest waiting sequence of the tenant with the
// fewest running ones (so a tenant with many queued requests cannot hold the batch; with one
// tenant this is arrival order). When a running sequence needs a new block and none is
// free, the most recently admitted running sequence is preempted: its blocks are freed and it
// returns to the front of the queue, to be recomputed from its tokens later.
import type { BlockManager } from "./kv_blocks.ts";
import type { Sequence } from "./sequence.ts";

export interface SchedulerLimits {
  maxNumSeqs: number; // running sequences at once
  maxBatchedTokens: number; // tokens computed in one step
  maxModelLen: number; // prompt + output tokens of one sequence
}

/** One sequence's share of a step: compute tokens [start, end) of seq.tokenIds. */
export interface ScheduledChunk {
  seq: Sequence;
  start: number;
  end: number;
}

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  /** Sequences preempted so far (metrics, tests). */
  preemptions = 0;

  constructor(readonly blocks: BlockManager, readonly limits: SchedulerLimits) {}

  get numUnfinished(): number {
    return this.waiting.length + this.running.length;
  }

  add(seq: Sequence): void {
    seq.status = "waiting";
    this.waiting.push(seq);
  }

  /** Removes a sequence wherever it is and frees its blocks (cancel, finish). */
  remove(seq: Sequence): void {
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    const r = this.running.indexOf(seq);
    if (r >= 0) this.running.splice(r, 1);
    if (seq.blockTable.length > 0) this.blocks.free(seq);
  }

  /** The chunks of the next step (empty when there is nothing to do). */
  schedule(): ScheduledChunk[] {
    const chunks: ScheduledChunk[] = [];
    let budget = this.limits.maxBatchedTokens;
    // 1. decode the running sequences (each computes its last, not yet cached token)
    for (let i = 0; i < this.running.length; i++) {
      const seq = this.running[i];
      while (!this.blocks.canAppend(seq)) {
        const victim = this.running[this.running.length - 1];
        this.#preempt(victim);
        if (victim === seq) break;
      }
      if (seq.status !== "running") break; // preempted itself: the rest were preempted before it
      this.blocks.mayAppend(seq);
      chunks.push({ seq, start: seq.numComputedTokens, end: seq.length });
      budget -= seq.length - seq.numComputedTokens;
    }
    // 2. admit waiting sequences while they fit
    while (this.waiting.length > 0 && this.running.length < this.limits.maxNumSeqs) {
      const at = this.#nextWaiting();
      const seq = this.waiting[at];
      if (!this.blocks.canAllocate(seq)) break;
      // cached prefix tokens are not computed; estimate with the full length before allocating
      const need = seq.length;
      if (need > budget && chunks.length > 0) break;
      this.waiting.splice(at, 1);
      this.blocks.allocate(seq);
      // a request for prompt logprobs computes its whole prompt (the cached prefix is read, not written again)
      seq.numComputedTokens = seq.wantsPromptLogits ? 0 : seq.numCachedTokens;
      seq.status = "running";
      this.running.push(seq);
      chunks.push({ seq, start: seq.numComputedTokens, end: seq.length });
      budget -= seq.length - seq.numComputedTokens;
    }
    return chunks;
  }

  /** The index of the waiting sequence to admit next (see the file comment). */
  #nextWaiting(): number {
    if (this.waiting[0].preempted) return 0;
    const running = new Map<string, number>();
    for (const s of this.running) running.set(s.tenant, (running.get(s.tenant) ?? 0) + 1);
    let best = 0, fewest = Infinity;
    for (let i = 0; i < this.waiting.length; i++) {
      const n = running.get(this.waiting[i].tenant) ?? 0;
      if (n < fewest) {
        fewest = n;
        best = i;
        if (n === 0) break;
      }
    }
    return best;
  }

  #preempt(seq: Sequence): void {
    this.preemptions++;
    seq.preempted = true;
    this.running.splice(this.running.indexOf(seq), 1);
    this.blocks.free(seq);
    seq.numComputedTokens = 0;
    seq.status = "waiting";
    this.waiting.unshift(seq);
  }
}
