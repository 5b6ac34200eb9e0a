// engine.ts — the generation engine: a step loop over the scheduler and the model runner.
// Requests come in as token ids and leave as a stream of events (token pieces, then a finish).
// Sampling, stop conditions and detokenization happen here, between steps.
import { setImmediate } from "node:timers";
import type { LlamaModel } from "../model/llama.ts";
import { BlockManager } from "./kv_blocks.ts";
import { type AdapterBinder, ModelRunner } from "./runner.ts";
import { type ScheduledChunk, Scheduler } from "./scheduler.ts";
import { type FinishReason, Sequence, type StoppingParams } from "./sequence.ts";
import { type PromptLogprob, promptLogprobsOf, type SamplingParams, type TopLogprob } from "./sampling.ts";
import { type DetokenizerSource, IncrementalDetokenizer } from "./detokenize.ts";
import { EventQueue } from "../util/event_queue.ts";
import type { GrammarState } from "./grammar.ts";

/** Tokens one step computes by default: the running decodes plus prompt chunks up to this many
 * (a longer prompt is prefilled over several steps, so the others' streams keep flowing). */
export const DEFAULT_MAX_BATCHED_TOKENS = 256;

export interface EngineOptions {
  maxNumSeqs?: number; // default 64
  /** Tokens computed in one step (decodes + prompt chunks; longer prompts are chunked); default
   * DEFAULT_MAX_BATCHED_TOKENS, at least maxNumSeqs. */
  maxBatchedTokens?: number;
  /** KV cache blocks. The server's worker passes them, sized by a memory budget (serving/kv_budget.ts);
   * default here (tests, scripts): enough for maxNumSeqs sequences of 512 tokens. */
  numBlocks?: number;
  blockSize?: number; // default 16
  maxModelLen: number;
  /** Called after each step (metrics). */
  onStep?: (info: StepInfo) => void;
}

export interface StepInfo {
  sequences: number;
  tokens: number;
  prefillTokens: number;
  seconds: number;
  waiting: number;
  running: number;
}

export interface GenerateRequest {
  promptIds: number[];
  sampling?: Partial<SamplingParams>;
  stopping?: Partial<StoppingParams>;
  adapterUid?: string | null;
  /** Top alternatives per prompt token (0-20): the first token event carries the prompt's logprobs;
   * null or absent: none (the prompt's every position is computed only for requests that ask). */
  promptLogprobs?: number | null;
  /** Whose request it is (fair admission across tenants) and its tenant's weight (default 1). */
  tenant?: string;
  tenantWeight?: number;
  signal?: AbortSignal;
  includeStopString?: boolean;
  skipSpecialTokens?: boolean;
  /** A grammar the output must follow (its first mask ready); the engine advances it per token
   * but does not own it (the caller disposes of it once the events end). */
  grammar?: GrammarState | null;
}

export type GenerateEvent =
  | {
    type: "token";
    tokenId: number;
    text: string;
    logprob?: number;
    topLogprobs?: TopLogprob[];
    /** On the first token of a request that asked: one entry per prompt token (the first null). */
    promptLogprobs?: (PromptLogprob | null)[];
  }
  | {
    type: "finish";
    text: string; // the last held-back text, if any
    finishReason: FinishReason;
    stopReason: string | number | null;
    promptTokens: number;
    completionTokens: number;
    cachedTokens: number;
  };

export class EngineError extends Error {
  override name = "EngineError";
  constructor(message: string, readonly code: "context_length_exceeded" | "invalid_request" | "engine_stopped") {
    super(message);
  }
}

interface Pending {
  seq: Sequence;
  detok: IncrementalDetokenizer;
  events: EventQueue<GenerateEvent>;
  done: boolean;
  cachedTokens: number;
}

export class Engine {
  readonly blocks: BlockManager;
  readonly scheduler: Scheduler;
  readonly runner: ModelRunner;
  readonly maxModelLen: number;
  #pending = new Map<Sequence, Pending>();
  #loop: Promise<void> | null = null;
  #stopped = false;
  #onStep?: (info: StepInfo) => void;

  constructor(readonly model: LlamaModel, readonly tokenizer: DetokenizerSource, opts: EngineOptions, adapters?: AdapterBinder) {
    const blockSize = opts.blockSize ?? 16;
    const maxNumSeqs = opts.maxNumSeqs ?? 64;
    const numBlocks = opts.numBlocks ?? Math.ceil((maxNumSeqs * Math.min(512, opts.maxModelLen)) / blockSize);
    this.maxModelLen = opts.maxModelLen;
    this.blocks = new BlockManager(numBlocks, blockSize);
    const maxBatchedTokens = opts.maxBatchedTokens ?? Math.max(DEFAULT_MAX_BATCHED_TOKENS, maxNumSeqs);
    // every running sequence may decode in one step, and a prefill under way must still progress
    if (!Number.isInteger(maxBatchedTokens) || maxBatchedTokens < maxNumSeqs) {
      throw new RangeError(`maxBatchedTokens (${maxBatchedTokens}) must be an integer >= maxNumSeqs (${maxNumSeqs})`);
    }
    this.scheduler = new Scheduler(this.blocks, {
      maxNumSeqs,
      maxBatchedTokens,
      maxModelLen: opts.maxModelLen,
    });
    this.runner = new ModelRunner(model, model.newKvCache(numBlocks, blockSize), this.blocks, adapters);
    this.#onStep = opts.onStep;
  }

  get numWaiting(): number {
    return this.scheduler.waiting.length;
  }
  get numRunning(): number {
    return this.scheduler.running.length;
  }
  /** Adapter uids of running and waiting sequences (for metrics). */
  adapterUids(): { running: string[]; waiting: string[] } {
    const ids = (xs: Sequence[]) => [...new Set(xs.map((s) => s.adapterUid).filter((a): a is string => a !== null))];
    return { running: ids(this.scheduler.running), waiting: ids(this.scheduler.waiting) };
  }

  /** Checks a request before it is queued (so the caller can answer 400 at once). */
  validate(req: GenerateRequest): void {
    if (req.promptIds.length === 0) throw new EngineError("the prompt is empty", "invalid_request");
    const maxTokens = req.stopping?.maxTokens ?? 16;
    if (req.promptIds.length >= this.maxModelLen) {
      throw new EngineError(
        `the prompt has ${req.promptIds.length} tokens; this model's context is ${this.maxModelLen}`,
        "context_length_exceeded",
      );
    }
    if (req.promptIds.length > this.blocks.numBlocks * this.blocks.blockSize) {
      throw new EngineError(`the prompt needs more KV cache than the server has`, "context_length_exceeded");
    }
    for (const id of req.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= this.model.shape.vocab) {
        throw new EngineError(`token id ${id} is outside the vocabulary`, "invalid_request");
      }
    }
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new EngineError("max_tokens must be a positive integer", "invalid_request");
  }

  /** Starts a request; its events arrive through the returned iterator. */
  generate(req: GenerateRequest): AsyncIterableIterator<GenerateEvent> {
    if (this.#stopped) throw new EngineError("the engine is stopped", "engine_stopped");
    this.validate(req);
    const maxTokens = Math.min(req.stopping?.maxTokens ?? 16, this.maxModelLen - req.promptIds.length);
    const seq = new Sequence({
      promptIds: req.promptIds,
      sampling: req.sampling,
      stopping: { ...req.stopping, maxTokens },
      adapterUid: req.adapterUid ?? null,
      tenant: req.tenant,
      tenantWeight: req.tenantWeight,
      grammar: req.grammar,
      promptLogprobs: req.promptLogprobs ?? null,
    });
    const detok = new IncrementalDetokenizer(this.tokenizer, {
      stop: seq.stopping.stop,
      includeStopString: req.includeStopString,
      skipSpecialTokens: req.skipSpecialTokens ?? true,
      promptIds: req.promptIds,
      minTokens: seq.stopping.minTokens,
    });
    const p: Pending = { seq, detok, events: new EventQueue(), done: false, cachedTokens: 0 };
    this.#pending.set(seq, p);
    this.scheduler.add(seq);
    const abort = () => this.#finish(p, "abort", null);
    if (req.signal) {
      if (req.signal.aborted) abort();
      else req.signal.addEventListener("abort", abort, { once: true });
    }
    this.#ensureLoop();
    const finish = (reason: FinishReason) => this.#finish(p, reason, null);
    async function* events(): AsyncGenerator<GenerateEvent> {
      try {
        for await (const e of p.events.drain()) {
          yield e;
          if (e.type === "finish") return;
        }
      } finally {
        // the consumer stopped early (e.g. client disconnected): cancel the sequence
        if (!p.done) finish("abort");
        req.signal?.removeEventListener("abort", abort);
      }
    }
    return events();
  }

  /** Stops the loop; unfinished requests finish with "abort". */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const p of [...this.#pending.values()]) this.#finish(p, "abort", null);
    await this.#loop;
  }

  dispose(): void {
    this.runner.cache.dispose();
  }

  #ensureLoop(): void {
    if (this.#loop) return;
    this.#loop = (async () => {
      try {
        while (!this.#stopped && this.scheduler.numUnfinished > 0) {
          this.step();
          // the grammars' next masks are computed now, between steps; their wall time is the
          // batch's wait for them (other work queued meanwhile included: an upper bound)
          const pending = this.#pendingMasks();
          if (pending) {
            const t0 = performance.now();
            this.grammarMasks += await pending;
            this.grammarMaskMs += performance.now() - t0;
          }
          // let I/O (new requests, disconnects, streaming writes) run between steps;
          // setImmediate, because a setTimeout(0) costs about 10 ms here
          await new Promise((r) => setImmediate(r));
        }
      } finally {
        this.#loop = null;
      }
    })();
  }

  /** Next-token masks computed between steps, and the milliseconds the step loop waited for them. */
  grammarMasks = 0;
  grammarMaskMs = 0;

  /** Resolves (to how many) when every constrained sequence's next mask is ready. */
  #pendingMasks(): Promise<number> | null {
    let out: Promise<void>[] | null = null;
    for (const seq of this.scheduler.running) {
      if (seq.grammar && !seq.grammar.mask && !seq.grammar.terminated) (out ??= []).push(seq.grammar.ready());
    }
    for (const seq of this.scheduler.waiting) {
      if (seq.grammar && !seq.grammar.mask && !seq.grammar.terminated) (out ??= []).push(seq.grammar.ready());
    }
    return out ? Promise.all(out).then((x) => x.length) : null;
  }

  /** Runs one step synchronously; returns the number of tokens computed. */
  step(): number {
    const t0 = performance.now();
    const chunks: ScheduledChunk[] = this.scheduler.schedule();
    if (chunks.length === 0) return 0;
    let tokens = 0, prefill = 0;
    for (const c of chunks) {
      tokens += c.end - c.start;
      if (c.end - c.start > 1) prefill += c.end - c.start;
      const p = this.#pending.get(c.seq);
      // the first chunk of a prompt starts after its cached prefix
      if (p && c.seq.numOutputTokens === 0 && c.start === c.seq.numCachedTokens) p.cachedTokens = c.start;
    }
    const logits = this.#runContained(chunks);
    chunks.forEach((c, i) => {
      const p = this.#pending.get(c.seq);
      if (!p || p.done || logits[i] === null) return; // failed, or a prompt chunk with more to come
      const seq = c.seq;
      const V = this.model.shape.vocab, out = logits[i]!;
      let promptLogprobs: (PromptLogprob | null)[] | undefined;
      if (seq.wantsPromptLogits) {
        // the chunk was the whole prompt, its every row returned (runner.ts): row j predicts token j + 1
        promptLogprobs = promptLogprobsOf(out, V, seq.promptIds, seq.promptLogprobs!);
        seq.promptLogprobsDone = true;
      }
      const g = seq.grammar;
      let r;
      try {
        if (g && !g.mask) throw new Error("the grammar's mask is not ready (step() ran without yielding)");
        r = seq.sampler.sample(out.length === V ? out : out.subarray(out.length - V), seq.promptIds, seq.outputIds, g?.mask ?? null);
        if (g && !g.accept(r.token)) throw new Error(`the grammar refused token ${r.token} it allowed`);
      } catch (e) {
        this.#fail(p, e as Error);
        return;
      }
      seq.appendToken(r.token);
      const piece = p.detok.push(r.token);
      p.events.push({
        type: "token",
        tokenId: r.token,
        text: piece.text,
        logprob: r.logprob,
        topLogprobs: r.topLogprobs,
        ...(promptLogprobs ? { promptLogprobs } : {}),
      });
      if (piece.stopped !== null) this.#finish(p, "stop", piece.stopped); // the detokenizer honours min_tokens
      // a grammar that accepted a stop token has ended: min_tokens and ignore_eos cannot extend it
      else if (g?.terminated) this.#finish(p, "stop", r.token);
      else if (seq.checkStop(this.maxModelLen)) this.#finish(p, seq.finishReason!, seq.stopReason);
    });
    this.#onStep?.({
      sequences: chunks.length,
      tokens,
      prefillTokens: prefill,
      seconds: (performance.now() - t0) / 1000,
      waiting: this.scheduler.waiting.length,
      running: this.scheduler.running.length,
    });
    return tokens;
  }

  /**
   * Runs the step's chunks; when the batch fails, each chunk runs again alone (writing the same KV
   * slots again is harmless), so that a request or adapter that fails is failed alone and the
   * others' tokens are what they would have been (null: that chunk's sequence failed).
   */
  #runContained(chunks: ScheduledChunk[]): (Float32Array | null)[] {
    try {
      return this.runner.run(chunks);
    } catch (e) {
      if (chunks.length === 1) {
        const p = this.#pending.get(chunks[0].seq);
        if (p) this.#fail(p, e as Error);
        return [null];
      }
      return chunks.map((c) => this.#runContained([c])[0]);
    }
  }

  #finish(p: Pending, reason: FinishReason, stopReason: string | number | null): void {
    if (p.done) return;
    p.done = true;
    p.seq.finish(reason, stopReason);
    this.scheduler.remove(p.seq);
    this.#pending.delete(p.seq);
    const tail = reason === "stop" && typeof stopReason === "string" ? "" : p.detok.finish().text;
    p.events.push({
      type: "finish",
      text: tail,
      finishReason: reason,
      stopReason,
      promptTokens: p.seq.promptLength,
      completionTokens: p.seq.numOutputTokens,
      cachedTokens: p.cachedTokens,
    });
    p.events.end();
  }

  #fail(p: Pending, e: Error): void {
    console.error(`sequence ${p.seq.id} failed: ${e.message}`);
    this.#finish(p, "abort", `error: ${e.message}`);
  }
}
