// scheduler.ts — decides what runs in each step (policy only; no arithmetic, no native calls).
//
// Continuous batching with chunked prefill: every step first decodes one token for each running
// sequence whose prompt is computed, then spends what is left of the step's token budget
// (maxBatchedTokens) on prompt chunks: the running sequences still in prefill (oldest first), then
// waiting sequences admitted while the sequence limit and the KV blocks allow: preempted
// sequences first, then the oldest waiting sequence of the tenant with the fewest running ones per
// unit of its weight (so a tenant with many queued requests cannot hold the batch, and a tenant of
// weight 2 gets twice the share of one of weight 1 when they compete; with one tenant this is
// arrival order). A prompt longer than the budget is computed over several steps, so a long prompt never
// stalls the others' streams for its whole length; cached prefix blocks (found at allocation) are
// skipped. A sequence is sampled only after the step that computes its last token. When a running
// sequence needs a new block and none is free, the most recently admitted running sequence is
// preempted: its blocks are freed and it returns to the front of the queue, to be recomputed from
// its tokens later.
//
// Fair share: when the batch is full and a tenant waits with fewer running sequences (per unit of
// weight) than another tenant would have after giving one up, that other tenant's most recently
// admitted sequence is preempted to make room (one such swap per step). Without it a tenant whose
// long requests fill every slot holds the batch until they all end, however fair the admission
// order: a flood of 64-token requests kept another tenant's 16-token request waiting ~48 steps.
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
    // 1. decode the running sequences whose prompt is computed (each computes its last, not yet
    // cached token)
    for (let i = 0; i < this.running.length; i++) {
      const seq = this.running[i];
      if (seq.length - seq.numComputedTokens !== 1) continue; // still in prefill: step 2
      while (!this.blocks.canAppend(seq)) {
        const victim = this.running[this.running.length - 1];
        this.#preempt(victim);
        if (victim === seq) break;
      }
      if (seq.status !== "running") break; // preempted itself: the rest were preempted before it
      this.blocks.mayAppend(seq);
      chunks.push({ seq, start: seq.numComputedTokens, end: seq.length });
      budget -= 1;
    }
    // 2. a waiting tenant below its fair share takes a slot from the tenant furthest above it
    if (this.waiting.length > 0 && this.running.length >= this.limits.maxNumSeqs) budget += this.#fairSwap(chunks);
    // 3. continue the prefills under way (their blocks are allocated)
    for (const seq of this.running) {
      if (budget <= 0) break;
      const left = seq.length - seq.numComputedTokens;
      if (left <= 1) continue;
      const n = Math.min(left, budget);
      chunks.push({ seq, start: seq.numComputedTokens, end: seq.numComputedTokens + n });
      this.blocks.markFilled(seq, seq.numComputedTokens + n);
      budget -= n;
    }
    // 4. admit waiting sequences while they fit: the first chunk of each prompt
    while (budget > 0 && this.waiting.length > 0 && this.running.length < this.limits.maxNumSeqs) {
      const at = this.#nextWaiting();
      const seq = this.waiting[at];
      if (!this.blocks.canAllocate(seq)) break;
      this.waiting.splice(at, 1);
      this.blocks.allocate(seq, 0); // markFilled below: the blocks this step computes
      // a request for prompt logprobs computes its whole prompt in this one chunk, however long (the
      // cached prefix is read, not written again): its logits come from one forward pass
      seq.numComputedTokens = seq.wantsPromptLogits ? 0 : seq.numCachedTokens;
      seq.status = "running";
      this.running.push(seq);
      const left = seq.length - seq.numComputedTokens;
      const n = seq.wantsPromptLogits ? left : Math.min(left, budget);
      this.blocks.markFilled(seq, seq.numComputedTokens + n);
      chunks.push({ seq, start: seq.numComputedTokens, end: seq.numComputedTokens + n });
      budget -= n;
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
      const w = this.waiting[i];
      const n = (running.get(w.tenant) ?? 0) / w.tenantWeight;
      if (n < fewest) {
        fewest = n;
        best = i;
        if (n === 0) break;
      }
    }
    return best;
  }

  /** Preempts one running sequence of the most over-served tenant for the most under-served
   * waiting tenant, when that makes the shares fairer (see the file comment); returns the step's
   * tokens the victim's chunk gave back. */
  #fairSwap(chunks: ScheduledChunk[]): number {
    const running = new Map<string, number>();
    for (const s of this.running) running.set(s.tenant, (running.get(s.tenant) ?? 0) + 1);
    let want: Sequence | null = null, wantShare = Infinity;
    for (const w of this.waiting) {
      const share = (running.get(w.tenant) ?? 0) / w.tenantWeight;
      if (share < wantShare) [want, wantShare] = [w, share];
    }
    let victim: Sequence | null = null, victimShare = -Infinity;
    for (let i = this.running.length - 1; i >= 0; i--) {
      const r = this.running[i];
      const share = (running.get(r.tenant) ?? 0) / r.tenantWeight;
      if (share > victimShare) [victim, victimShare] = [r, share];
    }
    if (!want || !victim || victim.tenant === want.tenant) return 0;
    // fairer only if, after the swap, the waiting tenant is still at most the victim's share
    const wantAfter = ((running.get(want.tenant) ?? 0) + 1) / want.tenantWeight;
    const victimAfter = ((running.get(victim.tenant) ?? 0) - 1) / victim.tenantWeight;
    if (wantAfter > victimAfter) return 0;
    const at = chunks.findIndex((c) => c.seq === victim);
    const freed = at >= 0 ? chunks[at].end - chunks[at].start : 0;
    if (at >= 0) chunks.splice(at, 1);
    this.#preempt(victim);
    // the slot is for `want`: it goes ahead of the preempted sequence (which is next after it)
    this.waiting.splice(this.waiting.indexOf(want), 1);
    this.waiting.unshift(want);
    return freed;
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
