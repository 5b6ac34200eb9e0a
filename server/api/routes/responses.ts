// responses.ts — POST /v1/responses, OpenAI's Responses API, stateless, as a translation over chat.
//
// The request is translated into chat's fields (instructions and input items → messages,
// max_output_tokens → max_completion_tokens, text.format → response_format, tools → chat's
// function tools, include logprobs → logprobs) and dispatched in-process (app.fetch, no socket) to
// POST /v1/chat/completions, so it runs the very path chat runs: the same validation and policy
// refusals, admission, adapters via `model`, generation and metrics. What comes back is shaped into
// a Response object, or for `stream: true` re-emitted as the Responses stream events (`event:` +
// `data:` with a sequence_number; no [DONE]). Chat's errors come back in OpenAI's shape with
// `param` renamed to the Responses field (messages.3.content → input.2.content, response_format →
// text.format, max_completion_tokens → max_output_tokens). Nothing is stored: store: true,
// previous_response_id and conversation are 400s (request_policy.ts).
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import {
  type ResponseCreateRequest,
  ResponseCreateRequestSchema,
  type ResponseInputItem,
  ResponseSchema,
  ResponseStreamEventSchema,
} from "../schemas/responses.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { GENERATION_ERRORS } from "./shared.ts";
import { recordedFields, RESPONSES_POLICY } from "../schemas/request_policy.ts";
import { openAiError } from "../errors.ts";
import { ClientError, type ClientStatus } from "../../util/errors.ts";

const route = createRoute({
  method: "post",
  path: "/v1/responses",
  tags: ["Responses"],
  summary: "Creates a model response (OpenAI's Responses API; stateless: nothing is stored).",
  request: { body: { required: true, content: { "application/json": { schema: ResponseCreateRequestSchema } } } },
  responses: {
    200: {
      description: "The response (JSON), or the Responses stream events (SSE) when stream is true.",
      content: { "application/json": { schema: ResponseSchema }, "text/event-stream": { schema: ResponseStreamEventSchema } },
    },
    ...GENERATION_ERRORS,
  },
});

const hex = () => crypto.randomUUID().replaceAll("-", "");

// ---- request → chat

interface ChatMessage {
  role: string;
  content?: string | { type: "text"; text: string }[] | null;
  tool_call_id?: string;
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
}

/** Where each chat message came from: "instructions", or the input item's index (-1: the string input). */
type Source = "instructions" | number;

const textParts = (parts: { type: string; text?: string; refusal?: string }[]) =>
  parts.map((p) => ({ type: "text" as const, text: p.text ?? p.refusal ?? "" }));

/** The chat request a Responses request means, and where each of its messages came from. */
export function toChat(body: ResponseCreateRequest): { chat: Record<string, unknown>; sources: Source[] } {
  const messages: ChatMessage[] = [];
  const sources: Source[] = [];
  const push = (m: ChatMessage, s: Source) => {
    messages.push(m);
    sources.push(s);
  };
  if (body.instructions) push({ role: "system", content: body.instructions }, "instructions");
  if (typeof body.input === "string") push({ role: "user", content: body.input }, -1);
  else {
    body.input.forEach((item: ResponseInputItem, i: number) => {
      if (item.type === "message") {
        push({ role: item.role, content: typeof item.content === "string" ? item.content : textParts(item.content) }, i);
      } else if (item.type === "function_call") {
        const call = { id: item.call_id, type: "function" as const, function: { name: item.name, arguments: item.arguments } };
        const last = messages.at(-1);
        // consecutive calls (parallel tool calls) are one assistant turn, as are a text and the calls after it
        if (last?.role === "assistant" && sources.at(-1) !== "instructions") (last.tool_calls ??= []).push(call);
        else push({ role: "assistant", content: null, tool_calls: [call] }, i);
      } else {
        push(
          { role: "tool", tool_call_id: item.call_id, content: typeof item.output === "string" ? item.output : textParts(item.output) },
          i,
        );
      }
    });
  }
  const chat: Record<string, unknown> = { model: body.model, messages, n: 1 };
  const copy = (from: keyof ResponseCreateRequest, to: string = from) => {
    if (body[from] !== undefined && body[from] !== null) chat[to] = body[from];
  };
  copy("max_output_tokens", "max_completion_tokens");
  copy("temperature");
  copy("top_p");
  for (const k of ["user", "metadata", "safety_identifier", "prompt_cache_key", "service_tier"] as const) copy(k);
  if (body.include?.includes("message.output_text.logprobs") || (body.top_logprobs ?? null) !== null) {
    chat.logprobs = true;
    copy("top_logprobs");
  }
  const format = body.text?.format;
  if (format && format.type !== "text") {
    chat.response_format = format.type === "json_object" ? { type: "json_object" } : {
      type: "json_schema",
      json_schema: {
        name: format.name,
        schema: format.schema,
        ...(format.description !== undefined ? { description: format.description } : {}),
        ...(format.strict !== undefined && format.strict !== null ? { strict: format.strict } : {}),
      },
    };
  }
  // an empty tool list is no tools (and "auto"/"none" without tools change nothing)
  const tools = body.tools ?? [];
  if (tools.length > 0) {
    chat.tools = tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description ? { description: t.description } : {}),
        ...(t.parameters ? { parameters: t.parameters } : {}),
        ...(t.strict !== undefined && t.strict !== null ? { strict: t.strict } : {}),
      },
    }));
  }
  const choice = body.tool_choice;
  if (choice !== undefined && choice !== null && (tools.length > 0 || (choice !== "auto" && choice !== "none"))) {
    chat.tool_choice = typeof choice === "string" ? choice : { type: "function", function: { name: choice.name } };
  }
  if (body.parallel_tool_calls !== undefined && body.parallel_tool_calls !== null && tools.length > 0) {
    chat.parallel_tool_calls = body.parallel_tool_calls;
  }
  if (body.stream) {
    chat.stream = true;
    chat.stream_options = { include_usage: true };
  }
  return { chat, sources };
}

/** A chat error's `param` as the Responses field it came from. */
export function responsesParam(param: string | null, sources: Source[], inputIsString: boolean): string | null {
  if (!param) return param;
  const [head, ...rest] = param.split(".");
  if (head === "messages") {
    const k = Number(rest[0]);
    const s = sources[k];
    if (s === undefined) return "input";
    if (s === "instructions") return "instructions";
    if (inputIsString) return "input";
    const tail = rest.slice(1).map((p) => p === "tool_call_id" ? "call_id" : p).filter((p) => p !== "tool_calls");
    return ["input", String(s), ...tail].join(".");
  }
  if (head === "max_completion_tokens") return "max_output_tokens";
  if (head === "response_format") return ["text", "format", ...rest.filter((p) => p !== "json_schema")].join(".");
  if (head === "tools") return ["tools", ...rest.filter((p) => p !== "function")].join(".");
  if (head === "tool_choice") return ["tool_choice", ...rest.filter((p) => p !== "function")].join(".");
  if (head === "logprobs") return "include";
  return param;
}

// ---- chat → response

interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
  top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
}
interface ChatToolCallDelta {
  index: number;
  id?: string;
  function?: { name?: string; arguments?: string };
}
interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number } | null;
}

const outputLogprob = (l: ChatLogprob) => ({
  token: l.token,
  logprob: l.logprob,
  bytes: l.bytes ?? [],
  top_logprobs: l.top_logprobs.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes ?? [] })),
});
/** A stream delta's logprobs (OpenAI's ResponseLogProb: no bytes). */
const deltaLogprob = (l: ChatLogprob) => ({
  token: l.token,
  logprob: l.logprob,
  top_logprobs: l.top_logprobs.map((t) => ({ token: t.token, logprob: t.logprob })),
});

function usageOf(u: ChatUsage | null | undefined) {
  if (!u) return null;
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0, cache_write_tokens: 0 },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
  };
}

type Item =
  | {
    type: "message";
    id: string;
    status: "in_progress" | "completed" | "incomplete";
    role: "assistant";
    content: { type: "output_text"; text: string; annotations: never[]; logprobs: ReturnType<typeof outputLogprob>[] }[];
  }
  | {
    type: "function_call";
    id: string;
    call_id: string;
    name: string;
    arguments: string;
    status: "in_progress" | "completed" | "incomplete";
  };

/** The fields of a Response that echo the request. */
function echoed(body: ResponseCreateRequest) {
  return {
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model: body.model,
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: null,
    store: false,
    background: false,
    temperature: body.temperature ?? 1,
    top_p: body.top_p ?? 1,
    top_logprobs: body.top_logprobs ?? null,
    text: { format: body.text?.format ?? { type: "text" } },
    tools: (body.tools ?? []).map((t) => ({
      type: "function",
      name: t.name,
      description: t.description ?? null,
      parameters: t.parameters ?? null,
      strict: t.strict ?? null,
    })),
    tool_choice: body.tool_choice ?? "auto",
    truncation: "disabled",
    metadata: body.metadata ?? {},
    service_tier: body.service_tier ?? "default",
  };
}

/** Builds a response's output items as chat's output arrives (whole, or in stream deltas). */
class OutputBuilder {
  readonly items: Item[] = [];
  #message: Extract<Item, { type: "message" }> | null = null;
  #calls = new Map<number, Extract<Item, { type: "function_call" }>>();

  /** The open message item, opened (and reported) on first use. */
  message(onOpen: (item: Item, index: number) => void): Extract<Item, { type: "message" }> {
    if (!this.#message) {
      this.#message = { type: "message", id: `msg_${hex()}`, status: "in_progress", role: "assistant", content: [] };
      this.items.push(this.#message);
      onOpen(this.#message, this.items.length - 1);
    }
    return this.#message;
  }

  call(
    d: ChatToolCallDelta,
    onOpen: (item: Item, index: number) => void,
  ): { item: Extract<Item, { type: "function_call" }>; fresh: boolean } {
    let item = this.#calls.get(d.index);
    if (item) return { item, fresh: false };
    item = {
      type: "function_call",
      id: `fc_${hex()}`,
      call_id: d.id ?? `call_${hex()}`,
      name: d.function?.name ?? "",
      arguments: "",
      status: "in_progress",
    };
    this.#calls.set(d.index, item);
    this.items.push(item);
    onOpen(item, this.items.length - 1);
    return { item, fresh: true };
  }
}

function snapshot(
  body: ResponseCreateRequest,
  id: string,
  created: number,
  status: "in_progress" | "completed" | "incomplete",
  output: Item[],
  usage: unknown,
) {
  return {
    id,
    object: "response",
    created_at: created,
    completed_at: status === "in_progress" ? null : Math.floor(Date.now() / 1000),
    status,
    error: null,
    incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
    output,
    ...(usage ? { usage } : {}), // OpenAI's usage is absent, not null, until the response is done
    ...echoed(body),
  };
}

/** chat's SSE body → its data payloads, as they arrive. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let at: number;
      while ((at = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

export function registerResponses(app: OpenAPIHono<AppEnv>, _deps: AppDeps): void {
  app.openapi(route, async (c) => {
    const body = c.req.valid("json") as ResponseCreateRequest;
    c.set("recorded", recordedFields(RESPONSES_POLICY, body));
    const { chat, sources } = toChat(body);
    const headers = new Headers({ "content-type": "application/json", "x-request-id": c.var.requestId });
    const auth = c.req.header("authorization");
    if (auth) headers.set("authorization", auth);
    const res = await app.fetch(
      new Request(new URL("/v1/chat/completions", c.req.url), {
        method: "POST",
        headers,
        body: JSON.stringify(chat),
        signal: c.req.raw.signal,
      }),
    );
    if (res.status >= 500 && res.status !== 503) throw new Error(`chat answered ${res.status}: ${await res.text()}`);
    if (res.status !== 200) {
      const e = await res.json() as { error: { message: string; code: string | null; param: string | null } };
      throw new ClientError(
        res.status as ClientStatus,
        e.error.message,
        e.error.code,
        responsesParam(e.error.param, sources, typeof body.input === "string"),
      );
    }
    const id = `resp_${hex()}`;
    const created = Math.floor(Date.now() / 1000);
    if (!body.stream) {
      const done = await res.json();
      return c.json(wholeResponse(body, id, created, done), 200);
    }
    return streamResponse(c, body, id, created, res) as unknown as ReturnType<typeof c.json<never, 200>>;
  });
}

function wholeResponse(body: ResponseCreateRequest, id: string, created: number, done: {
  choices: {
    message: { content: string | null; tool_calls?: { id: string; function: { name: string; arguments: string } }[] };
    finish_reason: string;
    logprobs: { content: ChatLogprob[] | null } | null;
  }[];
  usage: ChatUsage;
}) {
  const choice = done.choices[0];
  const status = choice.finish_reason === "length" ? "incomplete" : "completed";
  const out = new OutputBuilder();
  const calls = choice.message.tool_calls ?? [];
  const text = choice.message.content ?? "";
  if (text.length > 0 || calls.length === 0) {
    const m = out.message(() => {});
    m.status = status;
    m.content.push({ type: "output_text", text, annotations: [], logprobs: (choice.logprobs?.content ?? []).map(outputLogprob) });
  }
  calls.forEach((tc, index) => {
    const { item } = out.call({ index, id: tc.id, function: tc.function }, () => {});
    item.arguments = tc.function.arguments;
    item.status = status;
  });
  return snapshot(body, id, created, status, out.items, usageOf(done.usage));
}

function streamResponse(c: Context<AppEnv>, body: ResponseCreateRequest, id: string, created: number, res: Response) {
  return streamSSE(c, async (stream) => {
    let seq = 0;
    const send = (type: string, fields: Record<string, unknown>) =>
      stream.writeSSE({ event: type, data: JSON.stringify({ type, sequence_number: seq++, ...fields }) });
    const out = new OutputBuilder();
    const opened: { type: string; index: number }[] = [];
    const onOpen = (item: Item, index: number) => opened.push({ type: item.type, index });
    let text = "";
    const logprobs: ReturnType<typeof outputLogprob>[] = [];
    let finish: string | null = null;
    let usage: ChatUsage | null = null;
    let textClosed = false;

    const flushOpened = async () => {
      for (const o of opened.splice(0)) {
        const item = out.items[o.index];
        const fresh = item.type === "message" ? { ...item, content: [] } : { ...item, arguments: "" };
        await send("response.output_item.added", { output_index: o.index, item: fresh });
        if (item.type === "message") {
          await send("response.content_part.added", {
            item_id: item.id,
            output_index: o.index,
            content_index: 0,
            part: { type: "output_text", text: "", annotations: [], logprobs: [] },
          });
        }
      }
    };
    const closeMessage = async (status: "completed" | "incomplete") => {
      const index = out.items.findIndex((i) => i.type === "message");
      if (index < 0 || textClosed) return;
      textClosed = true;
      const m = out.items[index] as Extract<Item, { type: "message" }>;
      const part = { type: "output_text" as const, text, annotations: [], logprobs };
      m.content = [part];
      m.status = status;
      await send("response.output_text.done", {
        item_id: m.id,
        output_index: index,
        content_index: 0,
        text,
        logprobs: logprobs.map(deltaLogprobOut),
      });
      await send("response.content_part.done", { item_id: m.id, output_index: index, content_index: 0, part });
      await send("response.output_item.done", { output_index: index, item: m });
    };

    await send("response.created", { response: snapshot(body, id, created, "in_progress", [], null) });
    await send("response.in_progress", { response: snapshot(body, id, created, "in_progress", [], null) });
    try {
      for await (const data of sseEvents(res.body!)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) {
          const e = chunk.error as { message: string; code: string | null; param: string | null };
          await send("error", { code: e.code, message: e.message, param: e.param });
          return;
        }
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        const delta = choice.delta ?? {};
        const lps: ChatLogprob[] = choice.logprobs?.content ?? [];
        if ((typeof delta.content === "string" && delta.content.length > 0) || lps.length > 0) {
          const m = out.message(onOpen);
          await flushOpened();
          const index = out.items.indexOf(m);
          text += delta.content ?? "";
          logprobs.push(...lps.map(outputLogprob));
          await send("response.output_text.delta", {
            item_id: m.id,
            output_index: index,
            content_index: 0,
            delta: delta.content ?? "",
            logprobs: lps.map(deltaLogprob),
          });
        }
        for (const d of (delta.tool_calls ?? []) as ChatToolCallDelta[]) {
          await closeMessage("completed");
          const { item } = out.call(d, onOpen);
          await flushOpened();
          if (d.function?.arguments) {
            item.arguments += d.function.arguments;
            await send("response.function_call_arguments.delta", {
              item_id: item.id,
              output_index: out.items.indexOf(item),
              delta: d.function.arguments,
            });
          }
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      if (finish === null) return; // the client went away (or the server is stopping): nobody to tell
      const status = finish === "length" ? "incomplete" : "completed";
      if (out.items.length === 0) {
        out.message(onOpen);
        await flushOpened();
      }
      await closeMessage(status);
      for (const [index, item] of out.items.entries()) {
        if (item.type !== "function_call") continue;
        item.status = status;
        await send("response.function_call_arguments.done", {
          item_id: item.id,
          output_index: index,
          name: item.name,
          arguments: item.arguments,
        });
        await send("response.output_item.done", { output_index: index, item });
      }
      const type = status === "completed" ? "response.completed" : "response.incomplete";
      await send(type, { response: snapshot(body, id, created, status, out.items, usageOf(usage)) });
    } catch (err) {
      const e = openAiError(err).body.error;
      await send("error", { code: e.code, message: e.message, param: e.param });
    }
  });
}

/** output_text.done's logprobs are ResponseLogProb (no bytes). */
const deltaLogprobOut = (l: ReturnType<typeof outputLogprob>) => ({
  token: l.token,
  logprob: l.logprob,
  top_logprobs: l.top_logprobs.map((t) => ({ token: t.token, logprob: t.logprob })),
});
