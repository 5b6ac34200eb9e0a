// completions.ts — POST /v1/completions.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { CompletionChunkSchema, type CompletionRequest, CompletionRequestSchema, CompletionSchema } from "../schemas/completions.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { ClientError } from "../../util/errors.ts";
import type { WorkerGenerate } from "../../serving/protocol.ts";
import { GENERATION_ERRORS } from "./shared.ts";
import { COMPLETIONS_POLICY, recordedFields } from "../schemas/request_policy.ts";
import { structuredOutputsGrammar } from "../structured.ts";
import {
  checkLength,
  checkTokenIds,
  type ChoiceShape,
  resolveModel,
  respond,
  samplingOf,
  startForRequest,
  stoppingOf,
  textPromptIds,
  type TokenEvent,
  tokenText,
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
    // suffix, best_of ≠ n and echo with logprobs are refused by the schema (request_policy.ts)
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
    const reqs: WorkerGenerate[] = [];
    for (const ids of prompts) {
      for (let i = 0; i < n; i++) {
        reqs.push({
          promptIds: ids,
          sampling: samplingOf(body, logprobs, i),
          stopping: stoppingOf(body, maxTokens),
          adapter: adapter ? { uid: adapter.uid, dir: adapter.dir } : null,
          grammar,
        });
      }
    }
    const started = await startForRequest(deps, c.get("principal").tenant, reqs, c.req.raw, t0);
    const shape = (index: number): ChoiceShape => {
      // echo and logprobs never come together (refused above), so offsets count from the echo
      const echo = body.echo ? deps.tokenizer.decode(prompts[Math.floor(index / n)]) : "";
      let text = echo;
      const acc = logprobs !== null ? new LogprobAcc(deps, text.length) : null;
      return {
        opening: echo ? { text: echo } : null,
        push(e) {
          text += e.text;
          if (e.type === "token") acc?.push(e);
        },
        tokenChunk: (e) =>
          e.text.length > 0 || acc ? { fields: { text: e.text }, logprobs: acc ? acc.take(acc.tokens.length - 1) : null } : null,
        finishChunk: (e) => ({ text: e.text }),
        whole: (e, reason) => ({ text, logprobs: acc ? acc.take(0) : null, finish_reason: reason, stop_reason: e.stopReason }),
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
