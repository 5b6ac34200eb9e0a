// completions.ts — POST /v1/completions.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { type CompletionRequest, CompletionRequestSchema, CompletionSchema } from "../schemas/completions.ts";
import { ErrorSchema } from "../schemas/common.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { ApiError } from "../errors.ts";
import type { WorkerGenerate } from "../../serving/protocol.ts";
import {
  checkLength,
  checkTokenIds,
  type Choice,
  type FinishEvent,
  finishReason,
  resolveModel,
  samplingOf,
  startForRequest,
  stoppingOf,
  type TokenEvent,
  tokenText,
  usageOf,
} from "../generation.ts";

const errors = {
  400: { description: "Invalid request", content: { "application/json": { schema: ErrorSchema } } },
  401: { description: "Missing or wrong API key", content: { "application/json": { schema: ErrorSchema } } },
  404: { description: "Unknown model", content: { "application/json": { schema: ErrorSchema } } },
  429: { description: "Queue full", content: { "application/json": { schema: ErrorSchema } } },
};
export const ERROR_RESPONSES = errors;

const route = createRoute({
  method: "post",
  path: "/v1/completions",
  tags: ["Completions"],
  summary: "Creates a completion for a prompt (OpenAI's legacy completions).",
  request: { body: { required: true, content: { "application/json": { schema: CompletionRequestSchema } } } },
  responses: {
    200: {
      description: "The completion (JSON), or a stream of text_completion chunks (SSE) when stream is true.",
      content: { "application/json": { schema: CompletionSchema }, "text/event-stream": { schema: CompletionSchema } },
    },
    ...errors,
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
    if (body.suffix) throw new ApiError(400, "suffix is not supported", "unsupported", "suffix");
    const n = body.n ?? 1;
    if (body.best_of !== null && body.best_of !== undefined && body.best_of !== n) {
      throw new ApiError(400, "best_of must equal n", "unsupported", "best_of");
    }
    if (body.echo && body.logprobs !== null && body.logprobs !== undefined) {
      throw new ApiError(400, "echo with logprobs is not supported (no prompt logprobs)", "unsupported", "echo");
    }
    const p = body.prompt;
    const prompts: number[][] = typeof p === "string"
      ? [deps.tokenizer.encode(p)]
      : p.length > 0 && typeof p[0] === "string"
      ? (p as string[]).map((s) => deps.tokenizer.encode(s))
      : typeof p[0] === "number"
      ? [p as number[]]
      : (p as number[][]);
    const maxTokens = body.max_tokens ?? 16;
    for (const ids of prompts) {
      if (ids.length === 0) throw new ApiError(400, "the prompt is empty", "invalid_value", "prompt");
      checkTokenIds(deps, ids, "prompt");
      checkLength(deps, ids.length, maxTokens, "prompt");
    }
    const logprobs = body.logprobs ?? null;
    const reqs: WorkerGenerate[] = [];
    for (const ids of prompts) {
      for (let i = 0; i < n; i++) {
        reqs.push({
          promptIds: ids,
          sampling: samplingOf(body, logprobs, i),
          stopping: stoppingOf(body, maxTokens),
          adapter: adapter ? { uid: adapter.uid, dir: adapter.dir } : null,
        });
      }
    }
    const { choices, unlink, abort } = await startForRequest(deps, reqs, c.req.raw, t0);
    const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const echoText = (i: number) => body.echo ? deps.tokenizer.decode(prompts[Math.floor(i / n)]) : "";
    const promptCounts = prompts.map((x) => x.length);

    if (!body.stream) {
      const finishes: FinishEvent[] = [];
      const out = await Promise.all(choices.map(async (ch) => {
        let text = echoText(ch.index);
        const acc = logprobs !== null ? new LogprobAcc(deps, text.length) : null;
        for await (const e of ch.events()) {
          text += e.text;
          if (e.type === "token") acc?.push(e);
          else {
            finishes.push(e);
            return {
              index: ch.index,
              text,
              logprobs: acc ? acc.take(0) : null,
              finish_reason: finishReason(e),
              stop_reason: e.stopReason,
            };
          }
        }
        throw new ApiError(500, "stream ended early", "internal");
      })).finally(() => {
        unlink();
        for (const ch of choices) ch.cancel(); // after an error in one choice, stop the others
      });
      return c.json({
        id,
        object: "text_completion" as const,
        created,
        model: body.model,
        choices: out,
        usage: usageOf(finishes, promptCounts),
      }, 200);
    }

    const includeUsage = body.stream_options?.include_usage === true;
    return streamSSE(c, async (stream) => {
      stream.onAbort(abort);
      const finishes: FinishEvent[] = [];
      const chunk = (index: number, text: string, lp: unknown, finish: string | null) => ({
        id,
        object: "text_completion",
        created,
        model: body.model,
        choices: [{ index, text, logprobs: lp, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });
      const run = async (ch: Choice) => {
        const acc = logprobs !== null ? new LogprobAcc(deps, 0) : null;
        const echo = echoText(ch.index);
        if (echo) await stream.writeSSE({ data: JSON.stringify(chunk(ch.index, echo, null, null)) });
        for await (const e of ch.events()) {
          if (e.type === "token") {
            acc?.push(e);
            if (e.text.length > 0 || acc) {
              await stream.writeSSE({ data: JSON.stringify(chunk(ch.index, e.text, acc ? acc.take(acc.tokens.length - 1) : null, null)) });
            }
          } else {
            finishes.push(e);
            let reason: string;
            try {
              reason = finishReason(e);
            } catch (err) {
              await stream.writeSSE({ data: JSON.stringify((err as ApiError).body?.() ?? { error: { message: String(err) } }) });
              return;
            }
            await stream.writeSSE({ data: JSON.stringify(chunk(ch.index, e.text, null, reason)) });
          }
        }
      };
      try {
        await Promise.all(choices.map(run));
        if (includeUsage) {
          await stream.writeSSE({
            data: JSON.stringify({
              id,
              object: "text_completion",
              created,
              model: body.model,
              choices: [],
              usage: usageOf(finishes, promptCounts),
            }),
          });
        }
        await stream.writeSSE({ data: "[DONE]" });
      } finally {
        unlink();
        for (const ch of choices) ch.cancel();
      }
    }) as unknown as ReturnType<typeof c.json<never, 200>>;
  });
}
