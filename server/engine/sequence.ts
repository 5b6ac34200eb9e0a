// sequence.ts — one generation request's state as the engine sees it.
import type { BlockSequence } from "./kv_blocks.ts";
import { makeSamplingParams, Sampler, type SamplingParams } from "./sampling.ts";
import type { GrammarState } from "./grammar.ts";

export type SequenceStatus = "waiting" | "running" | "preempted" | "finished";

/** OpenAI finish reasons ("abort": cancelled by the client or the server). */
export type FinishReason = "stop" | "length" | "abort";

export interface StoppingParams {
  /** Maximum number of generated tokens. */
  maxTokens: number;
  /** Token ids that end generation (EOS ids from generation_config, plus request stop_token_ids). */
  stopTokenIds: number[];
  /** Stop strings (handled by the detokenizer). */
  stop: string[];
  /** Keep generating past EOS (benchmarks). */
  ignoreEos: boolean;
  /** Do not finish before this many generated tokens. */
  minTokens: number;
}

let nextSeqId = 1;

export class Sequence implements BlockSequence {
  readonly id: number;
  /** Prompt + generated ids. */
  readonly tokenIds: number[];
  readonly promptLength: number;
  readonly sampling: SamplingParams;
  readonly sampler: Sampler;
  readonly stopping: StoppingParams;
  /** The registry uid of the LoRA adapter (unique per registration), or null for the base model. */
  readonly adapterUid: string | null;
  status: SequenceStatus = "waiting";
  finishReason: FinishReason | null = null;
  /** The stop string or token id that ended the sequence, when finishReason is "stop". */
  stopReason: string | number | null = null;
  blockTable: number[] = [];
  numCachedTokens = 0;
  /** Tokens whose KV is in the cache (the model runner advances it after each step). */
  numComputedTokens = 0;
  readonly arrivalTime: number;
  /** Whose request it is ("" when no one says): the scheduler shares admission across tenants. */
  readonly tenant: string;
  /** The tenant's share of the batch relative to other tenants' (default 1). */
  readonly tenantWeight: number;
  /** Preempted at least once (it goes back to the front of the queue). */
  preempted = false;
  /** The grammar its output must follow (structured outputs, forced tool calls), or null. */
  readonly grammar: GrammarState | null;
  /** Top alternatives per prompt token to report (0-20), or null: no prompt logprobs. */
  readonly promptLogprobs: number | null;
  /** The prompt's logprobs are computed (in the sequence's first prefill). */
  promptLogprobsDone = false;
  /** Per generated token logprob info, when requested. */
  readonly logprobs: Array<{ logprob: number; topLogprobs: Array<{ token: number; logprob: number }> }> = [];

  constructor(opts: {
    promptIds: number[];
    sampling?: Partial<SamplingParams>;
    stopping?: Partial<StoppingParams>;
    adapterUid?: string | null;
    tenant?: string;
    tenantWeight?: number;
    grammar?: GrammarState | null;
    id?: number;
    promptLogprobs?: number | null;
    arrivalTime?: number;
  }) {
    if (opts.promptIds.length === 0) throw new Error("a sequence needs at least one prompt token");
    this.id = opts.id ?? nextSeqId++;
    this.tokenIds = opts.promptIds.slice();
    this.promptLength = opts.promptIds.length;
    this.sampling = makeSamplingParams(opts.sampling);
    this.sampler = new Sampler(this.sampling);
    this.stopping = {
      maxTokens: opts.stopping?.maxTokens ?? 16,
      stopTokenIds: opts.stopping?.stopTokenIds ?? [],
      stop: opts.stopping?.stop ?? [],
      ignoreEos: opts.stopping?.ignoreEos ?? false,
      minTokens: opts.stopping?.minTokens ?? 0,
    };
    this.adapterUid = opts.adapterUid ?? null;
    this.promptLogprobs = opts.promptLogprobs ?? null;
    this.tenant = opts.tenant ?? "";
    this.tenantWeight = opts.tenantWeight !== undefined && opts.tenantWeight > 0 ? opts.tenantWeight : 1;
    this.grammar = opts.grammar ?? null;
    this.arrivalTime = opts.arrivalTime ?? performance.now();
  }

  /** Prefix-cache namespace: KV differs per adapter. */
  get cacheSalt(): string {
    return this.adapterUid ?? "";
  }

  /** Whether its next prefill must return the logits of every prompt position (and so compute
   * the whole prompt, prefix-cached or not). */
  get wantsPromptLogits(): boolean {
    return this.promptLogprobs !== null && !this.promptLogprobsDone;
  }

  get length(): number {
    return this.tokenIds.length;
  }

  get numOutputTokens(): number {
    return this.tokenIds.length - this.promptLength;
  }

  get promptIds(): number[] {
    return this.tokenIds.slice(0, this.promptLength);
  }

  get outputIds(): number[] {
    return this.tokenIds.slice(this.promptLength);
  }

  get lastTokenId(): number {
    return this.tokenIds[this.tokenIds.length - 1];
  }

  get isFinished(): boolean {
    return this.status === "finished";
  }

  appendToken(id: number): void {
    this.tokenIds.push(id);
  }

  /**
   * Checks the token-level stop conditions after appendToken(); sets status/finishReason.
   * Stop strings are checked by the detokenizer (call finish("stop", str) when it reports one).
   */
  checkStop(maxModelLen: number): boolean {
    const n = this.numOutputTokens;
    const last = this.lastTokenId;
    if (n >= this.stopping.minTokens && !this.stopping.ignoreEos && this.stopping.stopTokenIds.includes(last)) {
      this.finish("stop", last);
    } else if (n >= this.stopping.maxTokens || this.tokenIds.length >= maxModelLen) {
      this.finish("length");
    }
    return this.isFinished;
  }

  finish(reason: FinishReason, stopReason: string | number | null = null): void {
    this.status = "finished";
    this.finishReason = reason;
    this.stopReason = stopReason;
  }
}
