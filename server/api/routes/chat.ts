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
import { oneGrammar, responseFormatGrammar, structuredOutputsGrammar } from "../structured.ts";
import { planTools, toolCallsOf, ToolStreamParser } from "../tools.ts";
import {
  chatPromptIds,
  chatTemplateOf,
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
    const tools = planTools(body.tools, body.tool_choice, body.parallel_tool_calls, chatTemplateOf(deps));
    // the output's grammar: a response format, vLLM's structured_outputs, or a forced tool call
    const grammar = oneGrammar(
      responseFormatGrammar(body.response_format),
      structuredOutputsGrammar(body.structured_outputs),
      tools?.grammar ?? null,
    );
    const promptIds = await chatPromptIds(deps, who.tenant, body.messages, { tools: tools?.tools, signal: c.req.raw.signal });
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
        grammar,
        // the choices share the prompt: the first one scores it
        promptLogprobs: i === 0 ? body.prompt_logprobs ?? null : null,
      });
    }
    const started = await startForRequest(deps, c.get("principal").tenant, reqs, c.req.raw, t0);
    const parse = tools?.parse ? tools.format : null;
    const shape = (): ChoiceShape => {
      let text = "";
      let entry: ReturnType<typeof logprobEntry> | null = null;
      const entries: ReturnType<typeof logprobEntry>[] = [];
      // with tools, the text goes through the tool-call parser: content, then call deltas
      const stream = parse ? new ToolStreamParser(parse) : null;
      const delta = (piece: string, final: boolean): Record<string, unknown> | null => {
        if (!stream) return piece ? { content: piece } : null;
        const d = stream.push(piece, final);
        const out: Record<string, unknown> = {};
        if (d.content) out.content = d.content;
        if (d.toolCalls.length) out.tool_calls = d.toolCalls;
        return Object.keys(out).length ? out : null;
      };
      return {
        opening: { delta: { role: "assistant", content: "" } },
        push(e) {
          text += e.text;
          if (e.type === "token" && logprobs !== null) entries.push(entry = logprobEntry(deps, e));
        },
        tokenChunk: (e) => {
          const d = delta(e.text, false);
          return d || entry ? { fields: { delta: d ?? {} }, logprobs: entry ? { content: [entry], refusal: null } : null } : null;
        },
        finishChunk: (e) => ({ delta: delta(e.text, true) ?? {} }),
        streamedFinish: (reason) => (stream && stream.calls > 0 && reason === "stop" ? "tool_calls" : reason),
        whole: (e, reason) => {
          const calls = parse && reason === "stop" ? toolCallsOf(parse, text) : null;
          return {
            message: calls
              ? { role: "assistant", content: calls.content, refusal: null, tool_calls: calls.calls }
              : { role: "assistant", content: text, refusal: null },
            logprobs: logprobs !== null ? { content: entries, refusal: null } : null,
            finish_reason: calls ? "tool_calls" : reason,
            stop_reason: e.stopReason,
          };
        },
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
