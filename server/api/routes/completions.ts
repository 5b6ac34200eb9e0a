// completions.ts — POST /v1/completions.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { CompletionChunkSchema, type CompletionRequest, CompletionRequestSchema, CompletionSchema } from "../schemas/completions.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { ClientError } from "../../util/errors.ts";
import type { WorkerGenerate } from "../../serving/protocol.ts";
import type { GenerateEvent } from "../../engine/engine.ts";
import { IncrementalDetokenizer } from "../../engine/detokenize.ts";
import { GENERATION_ERRORS } from "./shared.ts";
import { COMPLETIONS_POLICY, recordedFields } from "../schemas/request_policy.ts";
import { structuredOutputsGrammar } from "../structured.ts";
import {
  checkLength,
  checkTokenIds,
  type ChoiceShape,
  type FinishEvent,
  resolveModel,
  respond,
  samplingOf,
  startForRequest,
  stoppingOf,
  textPromptIds,
  type TokenEvent,
  tokenText,
  vllmPromptLogprobs,
} from "../generation.ts";

const route = createRoute({
  method: "post",
  path: "/v1/completions",
  tags: ["Completions"],
  summary: "Creates a completion for a prompt (OpenAI's legacy completions).",
  request: { body: { required: true, content: { "application/json": { schema: CompletionRequestSchema } } } },
  responses: {
    200: {
      description: "The completion (JSON), or a stream of text_completion chunks (SSE) when stream is true.",
      content: { "application/json": { schema: CompletionSchema }, "text/event-stream": { schema: CompletionChunkSchema } },
    },
    ...GENERATION_ERRORS,
  },
});

class LogprobAcc {
  tokens: string[] = [];
  tokenLogprobs: (number | null)[] = [];
  top: (Record<string, number> | null)[] = [];
  offsets: number[] = [];
  constructor(readonly deps: AppDeps, public offset: number) {}
  push(e: TokenEvent): void {
    const t = tokenText(this.deps, e.tokenId).text;
    this.tokens.push(t);
    this.tokenLogprobs.push(e.logprob ?? null);
    const top: Record<string, number> = {};
    for (const x of e.topLogprobs ?? []) top[tokenText(this.deps, x.token).text] = x.logprob;
    this.top.push(top);
    this.offsets.push(this.offset);
    this.offset += e.text.length;
  }
  /** The echoed prompt's entries (before any generated token). */
  pushPrompt(p: ReturnType<LogprobAcc["take"]>): void {
    this.tokens.push(...p.tokens);
    this.tokenLogprobs.push(...p.token_logprobs);
    this.top.push(...p.top_logprobs);
    this.offsets.push(...p.text_offset);
  }

  /** An echoed prompt's entries: its tokens, their logprobs (the first null), top alternatives and
   * offsets in the echoed text (where each token's text starts, from one incremental decode whose
   * pieces concatenate to the echo). */
  static promptEntries(deps: AppDeps, ids: number[], first: GenerateEvent): ReturnType<LogprobAcc["take"]> {
    const acc = new LogprobAcc(deps, 0);
    const pl = first.type === "token" ? first.promptLogprobs : undefined;
    const detok = new IncrementalDetokenizer(deps.tokenizer);
    let at = 0;
    ids.forEach((id, i) => {
      const e = pl?.[i] ?? null;
      acc.tokens.push(tokenText(deps, id).text);
      acc.tokenLogprobs.push(e ? e.logprob : null);
      acc.top.push(e ? Object.fromEntries(e.topLogprobs.map((x) => [tokenText(deps, x.token).text, x.logprob])) : null);
      acc.offsets.push(at);
      at += detok.push(id).text.length;
    });
    return acc.take(0);
  }
  take(from: number) {
    return {
      tokens: this.tokens.slice(from),
      token_logprobs: this.tokenLogprobs.slice(from),
      top_logprobs: this.top.slice(from),
      text_offset: this.offsets.slice(from),
    };
  }
}

export function registerCompletions(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  app.openapi(route, async (c) => {
    const t0 = performance.now();
    const body: CompletionRequest = c.req.valid("json");
    const who = c.get("principal");
    const adapter = resolveModel(deps, who, body.model);
    // suffix and best_of ≠ n are refused by the schema (request_policy.ts)
    const n = body.n ?? 1;
    c.set("recorded", recordedFields(COMPLETIONS_POLICY, body));
    const p = body.prompt;
    const tenant = who.tenant, signal = c.req.raw.signal;
    const prompts: number[][] = typeof p === "string"
      ? [await textPromptIds(deps, tenant, p, true, signal)]
      : p.length > 0 && typeof p[0] === "string"
      ? await Promise.all((p as string[]).map((s) => textPromptIds(deps, tenant, s, true, signal)))
      : typeof p[0] === "number"
      ? [p as number[]]
      : (p as number[][]);
    const maxTokens = body.max_tokens ?? 16;
    for (const ids of prompts) {
      if (ids.length === 0) throw new ClientError(400, "the prompt is empty", "invalid_value", "prompt");
      checkTokenIds(deps, ids, "prompt");
      checkLength(deps, ids.length, maxTokens, "prompt");
    }
    const logprobs = body.logprobs ?? null;
    const grammar = structuredOutputsGrammar(body.structured_outputs);
    // the prompt's logprobs: for echo with logprobs (OpenAI) and for prompt_logprobs (vLLM), the
    // more alternatives of the two; the first choice of each prompt scores it for all n
    const echoLogprobs = body.echo === true && logprobs !== null;
    const promptLogprobs = echoLogprobs || (body.prompt_logprobs ?? null) !== null
      ? Math.max(echoLogprobs ? logprobs! : 0, body.prompt_logprobs ?? 0)
      : null;
    const reqs: WorkerGenerate[] = [];
    for (const ids of prompts) {
      for (let i = 0; i < n; i++) {
        reqs.push({
          promptIds: ids,
          sampling: samplingOf(body, logprobs, i),
          stopping: stoppingOf(body, maxTokens),
          adapter: adapter ? { uid: adapter.uid, dir: adapter.dir } : null,
          grammar,
          promptLogprobs: i === 0 ? promptLogprobs : null,
        });
      }
    }
    const started = await startForRequest(deps, c.get("principal").tenant, reqs, c.req.raw, t0);
    const echoed = new Map<number, ReturnType<LogprobAcc["take"]>>(); // per prompt, shared by its n choices
    const shape = (index: number): ChoiceShape => {
      const ids = prompts[Math.floor(index / n)];
      const scorer = started.choices[Math.floor(index / n) * n].first; // the choice that scored the prompt
      const echo = body.echo ? deps.tokenizer.decode(ids) : "";
      let text = echo;
      const acc = logprobs !== null ? new LogprobAcc(deps, text.length) : null;
      if (acc && echo) {
        const k = Math.floor(index / n);
        if (!echoed.has(k)) echoed.set(k, LogprobAcc.promptEntries(deps, ids, scorer));
        acc.pushPrompt(echoed.get(k)!);
      }
      const whole = (e: FinishEvent, reason: string) => ({
        text,
        logprobs: acc ? acc.take(0) : null,
        finish_reason: reason,
        stop_reason: e.stopReason,
        ...(body.prompt_logprobs !== undefined && body.prompt_logprobs !== null
          ? { prompt_logprobs: vllmPromptLogprobs(deps, scorer) }
          : {}),
      });
      return {
        opening: echo ? { text: echo, ...(acc ? { logprobs: acc.take(0) } : {}) } : null,
        push(e) {
          text += e.text;
          if (e.type === "token") acc?.push(e);
        },
        tokenChunk: (e) =>
          e.text.length > 0 || acc ? { fields: { text: e.text }, logprobs: acc ? acc.take(acc.tokens.length - 1) : null } : null,
        finishChunk: (e) => ({ text: e.text }),
        whole,
      };
    };
    return await respond(c, deps, started, {
      id: `cmpl-${crypto.randomUUID().replaceAll("-", "")}`,
      object: "text_completion",
      chunkObject: "text_completion",
      model: body.model,
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
      nullUsageInChunks: false,
      promptTokens: prompts.map((x) => x.length),
      shape: (ch) => shape(ch.index),
    }) as unknown as ReturnType<typeof c.json<never, 200>>;
  });
}
