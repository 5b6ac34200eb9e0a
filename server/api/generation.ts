// generation.ts — what chat and completions share: resolving `model` to the base model or an
// adapter, request fields → engine parameters, admission (429 when the queue is full), starting the
// choices (engine errors before the first token become 4xx), and per-token metrics.
import type { GenerateEvent } from "../engine/engine.ts";
import type { SamplingParams } from "../engine/sampling.ts";
import type { StoppingParams } from "../engine/sequence.ts";
import type { AdapterRecord } from "../adapters/registry.ts";
import { HostError } from "../serving/host.ts";
import type { WorkerGenerate } from "../serving/protocol.ts";
import type { Principal } from "./auth.ts";
import type { AppDeps } from "./deps.ts";
import { ApiError } from "./errors.ts";

export type TokenEvent = Extract<GenerateEvent, { type: "token" }>;
export type FinishEvent = Extract<GenerateEvent, { type: "finish" }>;

/** The model field → the base model or one of the caller's adapters (404 otherwise). */
export function resolveModel(deps: AppDeps, who: Principal, model: string): AdapterRecord | null {
  if (model === deps.host.info.id) return null;
  const rec = deps.registry.get(who, model);
  if (!rec) throw new ApiError(404, `The model \`${model}\` does not exist.`, "model_not_found", "model");
  return rec;
}

export interface CommonFields {
  temperature?: number | null;
  top_p?: number | null;
  n?: number | null;
  stop?: string | string[] | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  seed?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  repetition_penalty?: number | null;
  ignore_eos?: boolean;
  min_tokens?: number;
  stop_token_ids?: number[] | null;
}

export function samplingOf(body: CommonFields, logprobs: number | null, seedOffset: number): Partial<SamplingParams> {
  let logitBias: Record<number, number> | null = null;
  if (body.logit_bias) {
    logitBias = {};
    for (const [k, v] of Object.entries(body.logit_bias)) {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0) {
        throw new ApiError(400, `logit_bias key "${k}" is not a token id`, "invalid_value", "logit_bias");
      }
      logitBias[id] = v;
    }
  }
  return {
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    minP: body.min_p ?? 0,
    repetitionPenalty: body.repetition_penalty ?? 1,
    presencePenalty: body.presence_penalty ?? 0,
    frequencyPenalty: body.frequency_penalty ?? 0,
    logitBias,
    seed: body.seed === null || body.seed === undefined ? null : body.seed + seedOffset,
    logprobs,
  };
}

export function stoppingOf(body: CommonFields, maxTokens: number): Partial<StoppingParams> {
  const stop = body.stop === null || body.stop === undefined ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  return {
    maxTokens,
    stop: stop.filter((s) => s.length > 0),
    stopTokenIds: body.stop_token_ids ?? [],
    ignoreEos: body.ignore_eos ?? false,
    minTokens: body.min_tokens ?? 0,
  };
}

/** 400 when the prompt (plus the requested tokens) does not fit the context. */
export function checkLength(deps: AppDeps, promptTokens: number, maxTokens: number | null, param: string): void {
  const ctx = deps.host.info.maxModelLen;
  if (promptTokens >= ctx || (maxTokens !== null && promptTokens + maxTokens > ctx)) {
    throw new ApiError(
      400,
      `This model's maximum context length is ${ctx} tokens. However, you requested ${
        promptTokens + (maxTokens ?? 0)
      } tokens (${promptTokens} in the prompt, ${
        maxTokens ?? 0
      } for the completion). Please reduce the length of the prompt or the completion.`,
      "context_length_exceeded",
      param,
    );
  }
}

export function checkTokenIds(deps: AppDeps, ids: number[], param: string): void {
  const V = deps.host.info.shape.vocab;
  for (const id of ids) if (id >= V) throw new ApiError(400, `token id ${id} is outside the vocabulary (${V})`, "invalid_value", param);
}

/** One running choice: its events, with latency metrics recorded as they pass. */
export class Choice {
  #last = 0;
  #tokens = 0;
  constructor(
    readonly index: number,
    readonly it: AsyncIterator<GenerateEvent>,
    readonly first: GenerateEvent,
    readonly t0: number,
    readonly deps: AppDeps,
  ) {
    this.#record(first);
  }

  #record(e: GenerateEvent): void {
    const now = performance.now(), m = this.deps.metrics;
    if (e.type === "token") {
      if (this.#tokens === 0) m.ttft.observe((now - this.t0) / 1000);
      else m.itl.observe((now - this.#last) / 1000);
      this.#tokens++;
      this.#last = now;
    } else {
      m.e2e.observe((now - this.t0) / 1000);
      m.promptTokens.inc({}, e.promptTokens);
      m.generationTokens.inc({}, e.completionTokens);
      m.finished.inc({ finish_reason: e.finishReason });
    }
  }

  async *events(): AsyncGenerator<GenerateEvent> {
    yield this.first;
    if (this.first.type === "finish") return;
    while (true) {
      const r = await this.it.next();
      if (r.done) throw new ApiError(500, "the engine ended a stream without finishing it", "internal");
      this.#record(r.value);
      yield r.value;
      if (r.value.type === "finish") return;
    }
  }

  cancel(): void {
    void this.it.return?.();
  }
}

export function hostErrorToApi(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof HostError) {
    switch (e.code) {
      case "context_length_exceeded":
      case "invalid_request":
        return new ApiError(400, e.message, e.code);
      case "invalid_adapter":
        return new ApiError(400, `the adapter could not be loaded: ${e.message}`, "invalid_adapter", "model");
      case "adapter_not_found":
        return new ApiError(404, `the adapter's files are gone: ${e.message}`, "model_not_found", "model");
      case "engine_stopped":
        return new ApiError(503, e.message, "engine_stopped");
    }
  }
  return new ApiError(500, `generation failed: ${(e as Error).message}`, "internal");
}

/** Admits and starts the requests; resolves once every choice has its first event. */
export async function startChoices(deps: AppDeps, reqs: WorkerGenerate[], signal: AbortSignal, t0: number): Promise<Choice[]> {
  const host = deps.host;
  if (host.outstanding + reqs.length > host.info.maxNumSeqs + deps.maxQueue) {
    deps.metrics.rejected.inc();
    throw new ApiError(429, "the server is at capacity: too many requests are waiting; retry later", "queue_full");
  }
  const its = reqs.map((r) => host.generate(r, signal));
  const firsts = await Promise.allSettled(its.map((it) => it.next()));
  const failed = firsts.find((f) => f.status === "rejected");
  if (failed) {
    for (const it of its) void it.return?.();
    throw hostErrorToApi((failed as PromiseRejectedResult).reason);
  }
  return its.map((it, i) => {
    const r = (firsts[i] as PromiseFulfilledResult<IteratorResult<GenerateEvent>>).value;
    if (r.done) throw new ApiError(500, "the engine ended a stream without events", "internal");
    return new Choice(i, it, r.value, t0, deps);
  });
}

export function finishReason(f: FinishEvent): "stop" | "length" | "abort" {
  if (f.finishReason === "abort" && typeof f.stopReason === "string" && f.stopReason.startsWith("error:")) {
    throw new ApiError(500, `generation failed: ${f.stopReason.slice(7)}`, "internal");
  }
  return f.finishReason;
}

export function usageOf(finishes: FinishEvent[], promptTokensPerPrompt: number[]) {
  const prompt = promptTokensPerPrompt.reduce((a, b) => a + b, 0);
  const completion = finishes.reduce((a, f) => a + f.completionTokens, 0);
  const cached = finishes.reduce((a, f) => a + f.cachedTokens, 0);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/** A token's text for logprobs (decoded on its own) and its UTF-8 bytes. */
export function tokenText(deps: AppDeps, id: number): { text: string; bytes: number[] } {
  return { text: deps.tokenizer.decode([id], { skipSpecialTokens: false }), bytes: Array.from(deps.tokenizer.tokenBytes(id)) };
}

/** Starts the choices with the client's connection as their lifetime: a disconnect aborts them
 * (so does `abort`, e.g. when an SSE stream is closed); `unlink` detaches the listener once the
 * response is complete. */
export async function startForRequest(
  deps: AppDeps,
  reqs: WorkerGenerate[],
  request: Request,
  t0: number,
): Promise<{ choices: Choice[]; unlink: () => void; abort: () => void }> {
  const ac = new AbortController();
  const onGone = () => ac.abort();
  request.signal.addEventListener("abort", onGone, { once: true });
  const unlink = () => request.signal.removeEventListener("abort", onGone);
  try {
    return { choices: await startChoices(deps, reqs, ac.signal, t0), unlink, abort: () => ac.abort() };
  } catch (e) {
    unlink();
    throw e;
  }
}
