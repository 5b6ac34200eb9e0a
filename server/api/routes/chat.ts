// chat.ts — POST /v1/chat/completions.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import {
  ChatCompletionChunkSchema,
  type ChatCompletionRequest,
  ChatCompletionRequestSchema,
  ChatCompletionSchema,
} from "../schemas/chat.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { ClientError } from "../../util/errors.ts";
import type { WorkerGenerate } from "../../serving/protocol.ts";
import { GENERATION_ERRORS } from "./shared.ts";
import { CHAT_POLICY, recordedFields } from "../schemas/request_policy.ts";
import {
  chatPromptIds,
  checkLength,
  checkTokenIds,
  type ChoiceShape,
  resolveModel,
  respond,
  samplingOf,
  startForRequest,
  stoppingOf,
  type TokenEvent,
  tokenText,
  vllmPromptLogprobs,
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
      content: { "application/json": { schema: ChatCompletionSchema }, "text/event-stream": { schema: ChatCompletionChunkSchema } },
    },
    ...GENERATION_ERRORS,
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
    c.set("recorded", recordedFields(CHAT_POLICY, body));
    const promptIds = chatPromptIds(deps, body.messages);
    if (promptIds.length === 0) throw new ClientError(400, "the rendered prompt is empty", "invalid_value", "messages");
    checkTokenIds(deps, promptIds, "messages");
    const requested = body.max_completion_tokens ?? body.max_tokens ?? null;
    checkLength(deps, promptIds.length, requested, "messages");
    const maxTokens = requested ?? deps.host.info.maxModelLen - promptIds.length;
    const n = body.n ?? 1;
    const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : null;
    if (!body.logprobs && body.top_logprobs !== null && body.top_logprobs !== undefined) {
      throw new ClientError(400, "top_logprobs needs logprobs: true", "invalid_value", "top_logprobs");
    }
    const reqs: WorkerGenerate[] = [];
    for (let i = 0; i < n; i++) {
      reqs.push({
        promptIds,
        sampling: samplingOf(body, logprobs, i),
        stopping: stoppingOf(body, maxTokens),
        adapter: adapter ? { uid: adapter.uid, dir: adapter.dir } : null,
        // the choices share the prompt: the first one scores it
        promptLogprobs: i === 0 ? body.prompt_logprobs ?? null : null,
      });
    }
    const started = await startForRequest(deps, c.get("principal").tenant, reqs, c.req.raw, t0);
    const shape = (): ChoiceShape => {
      let text = "";
      let entry: ReturnType<typeof logprobEntry> | null = null;
      const entries: ReturnType<typeof logprobEntry>[] = [];
      return {
        opening: { delta: { role: "assistant", content: "" } },
        push(e) {
          text += e.text;
          if (e.type === "token" && logprobs !== null) entries.push(entry = logprobEntry(deps, e));
        },
        tokenChunk: (e) =>
          e.text.length > 0 || entry
            ? { fields: { delta: { content: e.text } }, logprobs: entry ? { content: [entry], refusal: null } : null }
            : null,
        finishChunk: (e) => ({ delta: e.text ? { content: e.text } : {} }),
        whole: (e, reason) => ({
          message: { role: "assistant", content: text, refusal: null },
          logprobs: logprobs !== null ? { content: entries, refusal: null } : null,
          finish_reason: reason,
          stop_reason: e.stopReason,
        }),
      };
    };
    return await respond(c, deps, started, {
      id: `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`,
      object: "chat.completion",
      chunkObject: "chat.completion.chunk",
      model: body.model,
      stream: body.stream === true,
      includeUsage: body.stream_options?.include_usage === true,
      nullUsageInChunks: true,
      promptTokens: [promptIds.length],
      extra: body.prompt_logprobs !== undefined && body.prompt_logprobs !== null
        ? { prompt_logprobs: vllmPromptLogprobs(deps, started.choices[0].first) }
        : undefined,
      shape: () => shape(),
    }) as unknown as ReturnType<typeof c.json<never, 200>>;
  });
}
