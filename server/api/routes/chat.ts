// chat.ts — POST /v1/chat/completions.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { type ChatCompletionRequest, ChatCompletionRequestSchema, ChatCompletionSchema } from "../schemas/chat.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { ApiError } from "../errors.ts";
import { type ChatMessage, ChatTemplateError, renderChatTemplate } from "../../model/chat_template.ts";
import type { WorkerGenerate } from "../../serving/protocol.ts";
import { ERROR_RESPONSES } from "./completions.ts";
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

const route = createRoute({
  method: "post",
  path: "/v1/chat/completions",
  tags: ["Chat"],
  summary: "Creates a model response for the given chat conversation.",
  request: { body: { required: true, content: { "application/json": { schema: ChatCompletionRequestSchema } } } },
  responses: {
    200: {
      description: "The chat completion (JSON), or chat.completion.chunk objects (SSE) when stream is true.",
      content: { "application/json": { schema: ChatCompletionSchema }, "text/event-stream": { schema: ChatCompletionSchema } },
    },
    ...ERROR_RESPONSES,
  },
});

function logprobEntry(deps: AppDeps, e: TokenEvent) {
  const t = tokenText(deps, e.tokenId);
  return {
    token: t.text,
    logprob: e.logprob ?? 0,
    bytes: t.bytes,
    top_logprobs: (e.topLogprobs ?? []).map((x) => {
      const u = tokenText(deps, x.token);
      return { token: u.text, logprob: x.logprob, bytes: u.bytes };
    }),
  };
}

export function registerChat(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  app.openapi(route, async (c) => {
    const t0 = performance.now();
    const body: ChatCompletionRequest = c.req.valid("json");
    const who = c.get("principal");
    const adapter = resolveModel(deps, who, body.model);
    const tok = deps.tokenizer;
    const template = tok.chatTemplate ?? deps.chatTemplate;
    if (!template) {
      throw new ApiError(
        400,
        `the model \`${deps.host.info.id}\` has no chat template (it is a base model): use /v1/completions, or start the server with --chat-template FILE`,
        "chat_template_missing",
        "messages",
      );
    }
    const messages: ChatMessage[] = body.messages.map((m) => ({
      ...m,
      content: Array.isArray(m.content) ? m.content.map((p) => p.text).join("") : (m.content ?? ""),
    }));
    let promptIds: number[];
    try {
      const text = renderChatTemplate(template, messages, { addGenerationPrompt: true, bosToken: tok.bosToken, eosToken: tok.eosToken });
      promptIds = tok.encode(text, { addSpecialTokens: false });
    } catch (e) {
      if (e instanceof ChatTemplateError) throw new ApiError(400, e.message, "chat_template_error", "messages");
      throw e;
    }
    if (promptIds.length === 0) throw new ApiError(400, "the rendered prompt is empty", "invalid_value", "messages");
    checkTokenIds(deps, promptIds, "messages");
    const requested = body.max_completion_tokens ?? body.max_tokens ?? null;
    checkLength(deps, promptIds.length, requested, "messages");
    const maxTokens = requested ?? deps.host.info.maxModelLen - promptIds.length;
    const n = body.n ?? 1;
    const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : null;
    if (!body.logprobs && body.top_logprobs !== null && body.top_logprobs !== undefined) {
      throw new ApiError(400, "top_logprobs needs logprobs: true", "invalid_value", "top_logprobs");
    }
    const reqs: WorkerGenerate[] = [];
    for (let i = 0; i < n; i++) {
      reqs.push({
        promptIds,
        sampling: samplingOf(body, logprobs, i),
        stopping: stoppingOf(body, maxTokens),
        adapter: adapter ? { uid: adapter.uid, dir: adapter.dir } : null,
      });
    }
    const { choices, unlink, abort } = await startForRequest(deps, reqs, c.req.raw, t0);
    const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);

    if (!body.stream) {
      const finishes: FinishEvent[] = [];
      const out = await Promise.all(choices.map(async (ch) => {
        let text = "";
        const lps: ReturnType<typeof logprobEntry>[] = [];
        for await (const e of ch.events()) {
          text += e.text;
          if (e.type === "token") {
            if (logprobs !== null) lps.push(logprobEntry(deps, e));
          } else {
            finishes.push(e);
            return {
              index: ch.index,
              message: { role: "assistant" as const, content: text },
              logprobs: logprobs !== null ? { content: lps } : null,
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
        object: "chat.completion" as const,
        created,
        model: body.model,
        choices: out,
        usage: usageOf(finishes, [promptIds.length]),
      }, 200);
    }

    const includeUsage = body.stream_options?.include_usage === true;
    return streamSSE(c, async (stream) => {
      stream.onAbort(abort);
      const finishes: FinishEvent[] = [];
      const chunk = (index: number, delta: Record<string, string>, lp: unknown, finish: string | null) => ({
        id,
        object: "chat.completion.chunk",
        created,
        model: body.model,
        choices: [{ index, delta, logprobs: lp, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });
      const run = async (ch: Choice) => {
        await stream.writeSSE({ data: JSON.stringify(chunk(ch.index, { role: "assistant", content: "" }, null, null)) });
        for await (const e of ch.events()) {
          if (e.type === "token") {
            if (e.text.length > 0 || logprobs !== null) {
              const lp = logprobs !== null ? { content: [logprobEntry(deps, e)] } : null;
              await stream.writeSSE({ data: JSON.stringify(chunk(ch.index, { content: e.text }, lp, null)) });
            }
          } else {
            finishes.push(e);
            let reason: string;
            try {
              reason = finishReason(e);
            } catch (err) {
              await stream.writeSSE({ data: JSON.stringify((err as ApiError).body()) });
              return;
            }
            await stream.writeSSE({ data: JSON.stringify(chunk(ch.index, e.text ? { content: e.text } : {}, null, reason)) });
          }
        }
      };
      try {
        await Promise.all(choices.map(run));
        if (includeUsage) {
          await stream.writeSSE({
            data: JSON.stringify({
              id,
              object: "chat.completion.chunk",
              created,
              model: body.model,
              choices: [],
              usage: usageOf(finishes, [promptIds.length]),
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
