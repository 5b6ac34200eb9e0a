// generation.ts — what chat and completions share: resolving `model` to the base model or an
// adapter, request fields → engine parameters, admission (429 when the queue is full), starting the
// choices (engine errors before the first token are the host's ClientErrors), per-token metrics,
// and the response itself: one path collects the choices into a JSON body or streams them as SSE
// chunks; a route says only how its choices look (ChoiceShape).
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { GenerateEvent } from "../engine/engine.ts";
import type { SamplingParams } from "../engine/sampling.ts";
import type { StoppingParams } from "../engine/sequence.ts";
import type { AdapterRecord } from "../adapters/registry.ts";
import type { WorkerGenerate } from "../serving/protocol.ts";
import type { Caller } from "../util/caller.ts";
import { ClientError } from "../util/errors.ts";
import type { AppDeps, AppEnv } from "./deps.ts";
import { openAiError } from "./errors.ts";
import { type ChatMessage, ChatTemplateError, templateToolCall } from "../model/chat_template.ts";

export type TokenEvent = Extract<GenerateEvent, { type: "token" }>;
export type FinishEvent = Extract<GenerateEvent, { type: "finish" }>;

/** The model field → the base model or one of the caller's adapters (404 otherwise). */
export function resolveModel(deps: AppDeps, who: Caller, model: string): AdapterRecord | null {
  if (model === deps.host.info.id) return null;
  const rec = deps.registry.get(who, model);
  if (!rec) throw new ClientError(404, `The model \`${model}\` does not exist.`, "model_not_found", "model");
  return rec;
}

/** Chat messages (text parts joined) → the prompt's token ids, through the model's chat template
 * (or the server's --chat-template); 400 when there is none or it fails. Rendering and encoding
 * run in the tokenizer pool, off the HTTP thread, queued fairly among tenants. */
export async function chatPromptIds(
  deps: AppDeps,
  tenant: string,
  messages: {
    role: ChatMessage["role"];
    content?: string | { text?: string }[] | null;
    name?: string;
    tool_call_id?: string;
    tool_calls?: { function: { name: string; arguments: string } }[] | null;
  }[],
  opts: {
    addGenerationPrompt?: boolean;
    addSpecialTokens?: boolean;
    tools?: unknown[] | null;
    signal?: AbortSignal;
  } = {},
): Promise<number[]> {
  const template = chatTemplateOf(deps);
  if (!template) {
    throw new ClientError(
      400,
      `the model \`${deps.host.info.id}\` has no chat template (it is a base model): use /v1/completions, or start the server with --chat-template FILE`,
      "chat_template_missing",
      "messages",
    );
  }
  const msgs: ChatMessage[] = messages.map((m) => ({
    ...m,
    content: Array.isArray(m.content) ? m.content.map((p) => p.text ?? "").join("") : (m.content ?? ""),
    ...(m.tool_calls ? { tool_calls: m.tool_calls.map(templateToolCall) } : {}),
  }));
  try {
    return await deps.tokenizers.run(tenant, {
      t: "chat",
      template,
      messages: msgs,
      addGenerationPrompt: opts.addGenerationPrompt ?? true,
      addSpecialTokens: opts.addSpecialTokens ?? false,
      // Hugging Face templates take the tools as `tools` (a list of {type, function} objects)
      extra: opts.tools && opts.tools.length > 0 ? { tools: opts.tools } : undefined,
    }, opts.signal);
  } catch (e) {
    if (e instanceof ChatTemplateError) throw new ClientError(400, e.message, "chat_template_error", "messages");
    throw e;
  }
}

/** A text prompt → its token ids, in the tokenizer pool (off the HTTP thread). */
export function textPromptIds(
  deps: AppDeps,
  tenant: string,
  text: string,
  addSpecialTokens = true,
  signal?: AbortSignal,
): Promise<number[]> {
  return deps.tokenizers.encode(tenant, text, addSpecialTokens, signal);
}

/** The chat template chat requests render with (the model's, else the server's --chat-template). */
export function chatTemplateOf(deps: AppDeps): string | null {
  return deps.tokenizer.chatTemplate ?? deps.chatTemplate ?? null;
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
  prompt_logprobs?: number | null;
}

export function samplingOf(body: CommonFields, logprobs: number | null, seedOffset: number): Partial<SamplingParams> {
  let logitBias: Record<number, number> | null = null;
  if (body.logit_bias) {
    logitBias = {};
    for (const [k, v] of Object.entries(body.logit_bias)) {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0) {
        throw new ClientError(400, `logit_bias key "${k}" is not a token id`, "invalid_value", "logit_bias");
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
    throw new ClientError(
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
  for (const id of ids) if (id >= V) throw new ClientError(400, `token id ${id} is outside the vocabulary (${V})`, "invalid_value", param);
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
    readonly tenant: string,
    /** The base model's id or the adapter's (a metrics label). */
    readonly model: string,
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
      m.tenantPromptTokens.inc({ tenant: this.tenant }, e.promptTokens);
      m.tenantGenerationTokens.inc({ tenant: this.tenant }, e.completionTokens);
      m.adapterGenerationTokens.inc({ tenant: this.tenant, model: this.model }, e.completionTokens);
      m.finished.inc({ finish_reason: e.finishReason });
      this.deps.admission.charge(this.tenant, e.completionTokens);
    }
  }

  async *events(): AsyncGenerator<GenerateEvent> {
    yield this.first;
    if (this.first.type === "finish") return;
    while (true) {
      const r = await this.it.next();
      if (r.done) throw new Error("the engine ended a stream without finishing it");
      this.#record(r.value);
      yield r.value;
      if (r.value.type === "finish") return;
    }
  }

  cancel(): void {
    void this.it.return?.();
  }
}

/** Admits and starts the requests; resolves once every choice has its first event. */
export async function startChoices(
  deps: AppDeps,
  tenant: string,
  reqs: WorkerGenerate[],
  signal: AbortSignal,
  t0: number,
): Promise<Choice[]> {
  const host = deps.host;
  const capacity = host.info.maxNumSeqs + deps.maxQueue;
  if (reqs.length > capacity) {
    throw new ClientError(
      400,
      `${reqs.length} choices can never be admitted: the server holds ${capacity} requests at most`,
      "invalid_value",
      "n",
    );
  }
  if (host.outstanding + reqs.length > capacity) {
    deps.metrics.rejected.inc();
    deps.metrics.tenantRejected.inc({ tenant, reason: "queue_full" });
    throw new ClientError(429, "the server is at capacity: too many requests are waiting; retry later", "queue_full");
  }
  let releases: (() => void)[];
  try {
    // the prompt tokens the request costs: each distinct prompt once (n choices share theirs)
    const promptTokens = [...new Set(reqs.map((r) => r.promptIds))].reduce((a, p) => a + p.length, 0);
    releases = deps.admission.admit(tenant, reqs.length, promptTokens);
  } catch (e) {
    deps.metrics.rejected.inc();
    deps.metrics.tenantRejected.inc({ tenant, reason: e instanceof ClientError ? e.code ?? "limit" : "limit" });
    throw e;
  }
  deps.metrics.tenantRequests.inc({ tenant }, reqs.length);
  const model = reqs[0]?.adapter ? (deps.registry.byUid(reqs[0].adapter.uid)?.id ?? "adapter") : host.info.id;
  const tenantWeight = deps.keys.limitsOf(tenant).weight;
  const its = reqs.map((r, i) => released(host.generate({ ...r, tenant, tenantWeight }, signal), releases[i]));
  const firsts = await Promise.allSettled(its.map((it) => it.next()));
  const failed = firsts.find((f) => f.status === "rejected");
  if (failed) {
    for (const it of its) void it.return(undefined);
    throw (failed as PromiseRejectedResult).reason;
  }
  return its.map((it, i) => {
    const r = (firsts[i] as PromiseFulfilledResult<IteratorResult<GenerateEvent>>).value;
    if (r.done) throw new Error("the engine ended a stream without events");
    return new Choice(i, it, r.value, t0, deps, tenant, model);
  });
}

/** A finish event as OpenAI's finish_reason: only "stop" or "length" ever reach a client. The
 * engine's third reason, "abort", never does: a request the client aborted (it disconnected or
 * closed the stream) has nobody left to answer; one the server aborted (it is shutting down) ends
 * as an error instead: a 503 JSON response, or, once a stream has started, an error event in
 * OpenAI's shape in place of the choice's last chunk (and no [DONE]); an engine fault is a 500. */
export function finishReason(f: FinishEvent): "stop" | "length" {
  if (f.finishReason !== "abort") return f.finishReason;
  if (typeof f.stopReason === "string" && f.stopReason.startsWith("error:")) {
    throw new Error(`generation failed: ${f.stopReason.slice(7)}`);
  }
  throw new ClientError(503, "the server stopped the request before it finished (it is shutting down); retry", "request_aborted");
}

const fingerprints = new WeakMap<AppDeps, string>();
/** OpenAI's system_fingerprint: the model, quantization and backend this server runs (FNV-1a). */
export function systemFingerprint(deps: AppDeps): string {
  let fp = fingerprints.get(deps);
  if (!fp) {
    const info = deps.host.info;
    let h = 0x811c9dc5;
    for (const ch of `${info.id}|${info.quant}|${info.backend}|${info.maxModelLen}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    fp = `fp_${h.toString(16).padStart(8, "0")}`;
    fingerprints.set(deps, fp);
  }
  return fp;
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

/** A first event's prompt logprobs in vLLM's shape: per prompt token (the first null), token id →
 * {logprob, rank, decoded_token} for the prompt's token and the most likely ones. */
export function vllmPromptLogprobs(deps: AppDeps, first: GenerateEvent) {
  const pl = first.type === "token" ? first.promptLogprobs : undefined;
  if (!pl) return null;
  return pl.map((e) => {
    if (!e) return null;
    const out: Record<string, { logprob: number; rank: number; decoded_token: string }> = {};
    e.topLogprobs.forEach((t, k) => out[t.token] = { logprob: t.logprob, rank: k + 1, decoded_token: tokenText(deps, t.token).text });
    out[e.token] = { logprob: e.logprob, rank: e.rank, decoded_token: tokenText(deps, e.token).text };
    return out;
  });
}

/** A token's text for logprobs (decoded on its own) and its UTF-8 bytes. */
export function tokenText(deps: AppDeps, id: number): { text: string; bytes: number[] } {
  return { text: deps.tokenizer.decode([id], { skipSpecialTokens: false }), bytes: Array.from(deps.tokenizer.tokenBytes(id)) };
}

/** The stream, calling `release` once when it ends, however it ends (finished, failed, returned). */
async function* released<T>(it: AsyncIterator<T>, release: () => void): AsyncGenerator<T> {
  try {
    while (true) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  } finally {
    release();
    void it.return?.();
  }
}

/** Starts the choices with the client's connection as their lifetime: a disconnect aborts them
 * (so does `abort`, e.g. when an SSE stream is closed); `unlink` detaches the listener once the
 * response is complete. */
export async function startForRequest(
  deps: AppDeps,
  tenant: string,
  reqs: WorkerGenerate[],
  request: Request,
  t0: number,
): Promise<{ choices: Choice[]; unlink: () => void; abort: () => void }> {
  const ac = new AbortController();
  const onGone = () => ac.abort();
  request.signal.addEventListener("abort", onGone, { once: true });
  const unlink = () => request.signal.removeEventListener("abort", onGone);
  try {
    return { choices: await startChoices(deps, tenant, reqs, ac.signal, t0), unlink, abort: () => ac.abort() };
  } catch (e) {
    unlink();
    throw e;
  }
}

/** How one choice of a route looks, in a JSON body and in SSE chunks. `push` sees every event of
 * the choice in order; the chunk methods are asked right after `push` when streaming. */
export interface ChoiceShape {
  /** The fields of the choice's first chunk (chat: the role; completions: the echoed prompt and,
   * with logprobs, its tokens' logprobs), or null for none. */
  opening: Record<string, unknown> | null;
  push(e: GenerateEvent): void;
  /** A token's chunk: its fields and logprobs, or null when there is nothing to send. */
  tokenChunk(e: TokenEvent): { fields: Record<string, unknown>; logprobs: unknown } | null;
  finishChunk(e: FinishEvent): Record<string, unknown>;
  /** The finish reason sent in a stream (chat: "tool_calls" when the choice made calls); default:
   * the engine's. */
  streamedFinish?(reason: string): string;
  /** The whole choice of a JSON response (the fields after its index). */
  whole(e: FinishEvent, reason: string): Record<string, unknown>;
}

export interface ResponseSpec {
  id: string;
  /** The JSON body's `object` and the SSE chunks' `object`. */
  object: string;
  chunkObject: string;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  /** With includeUsage, the chunks before the usage chunk carry `usage: null` (chat's stream
   * schema says so); otherwise they carry no usage (completions' schema has no null usage). */
  nullUsageInChunks: boolean;
  /** Prompt tokens of each distinct prompt (for usage). */
  promptTokens: number[];
  /** Top-level fields of the JSON body beside OpenAI's (chat's prompt_logprobs). */
  extra?: Record<string, unknown>;
  shape(choice: Choice): ChoiceShape;
}

/** Answers a request whose choices have started: the collected JSON body, or (spec.stream) SSE
 * chunks, an optional usage chunk and [DONE]. The choices end with the response: an error in one
 * (or the client leaving) cancels the others. */
export function respond(
  c: Context<AppEnv>,
  deps: AppDeps,
  started: { choices: Choice[]; unlink: () => void; abort: () => void },
  spec: ResponseSpec,
): Promise<Response> | Response {
  const { choices, unlink, abort } = started;
  const created = Math.floor(Date.now() / 1000);
  const system_fingerprint = systemFingerprint(deps);
  const finishes: FinishEvent[] = [];
  const end = () => {
    unlink();
    for (const ch of choices) ch.cancel();
  };

  if (!spec.stream) {
    return Promise.all(choices.map(async (ch) => {
      const shape = spec.shape(ch);
      for await (const e of ch.events()) {
        shape.push(e);
        if (e.type === "finish") {
          finishes.push(e);
          return { index: ch.index, ...shape.whole(e, finishReason(e)) };
        }
      }
      throw new Error("stream ended early");
    })).finally(end).then((out) =>
      c.json({
        id: spec.id,
        object: spec.object,
        created,
        model: spec.model,
        system_fingerprint,
        choices: out,
        usage: usageOf(finishes, spec.promptTokens),
        ...spec.extra,
      }, 200)
    );
  }

  const chunk = (choices: unknown[], usage?: unknown) => ({
    id: spec.id,
    object: spec.chunkObject,
    created,
    model: spec.model,
    system_fingerprint,
    choices,
    ...(usage !== undefined ? { usage } : spec.includeUsage && spec.nullUsageInChunks ? { usage: null } : {}),
  });
  const choiceChunk = (index: number, fields: Record<string, unknown>, logprobs: unknown, finish: string | null) =>
    chunk([{ index, ...fields, logprobs, finish_reason: finish }]);
  return streamSSE(c, async (stream) => {
    stream.onAbort(abort);
    const send = (data: unknown) => stream.writeSSE({ data: JSON.stringify(data) });
    const run = async (ch: Choice) => {
      const shape = spec.shape(ch);
      if (shape.opening) {
        const { logprobs = null, ...fields } = shape.opening;
        await send(choiceChunk(ch.index, fields, logprobs, null));
      }
      for await (const e of ch.events()) {
        shape.push(e);
        if (e.type === "token") {
          const t = shape.tokenChunk(e);
          if (t) await send(choiceChunk(ch.index, t.fields, t.logprobs, null));
          continue;
        }
        finishes.push(e);
        let reason: string;
        try {
          reason = finishReason(e);
        } catch (err) {
          // the status line is sent: the failure can only be told in the stream
          deps.log?.({ ts: new Date().toISOString(), level: "error", msg: "stream failed", error: String(err) });
          await send(openAiError(err).body);
          return;
        }
        const fields = shape.finishChunk(e);
        await send(choiceChunk(ch.index, fields, null, shape.streamedFinish?.(reason) ?? reason));
      }
    };
    try {
      await Promise.all(choices.map(run));
      if (spec.includeUsage) await send(chunk([], usageOf(finishes, spec.promptTokens)));
      await stream.writeSSE({ data: "[DONE]" });
    } finally {
      end();
    }
  });
}
