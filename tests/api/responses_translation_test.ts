// responses_translation_test.ts — the Responses route's two translations, against a stand-in for
// chat (a stub POST /v1/chat/completions in the same app that records what it is sent and answers
// in OpenAI's chat shapes): a Responses request → chat's fields (items → messages with tool_calls
// and tool messages, text.format → response_format, tools and tool_choice → chat's function
// format), and chat's answers → a Response and the Responses events, tool calls included
// (function_call items, function_call_arguments deltas), every one validated against OpenAI's
// schemas. This checks the tool and structured-output paths without a model that calls tools.
import assert from "node:assert/strict";
import { OpenAPIHono } from "@hono/zod-openapi";
import { streamSSE } from "hono/streaming";
import { registerResponses } from "../../server/api/routes/responses.ts";
import { errorResponse, validationHook } from "../../server/api/errors.ts";
import type { AppDeps, AppEnv } from "../../server/api/deps.ts";
import { json } from "../helpers.ts";
import { assertOpenAi } from "./openai_schema.ts";

// deno-lint-ignore no-explicit-any
type J = any;

const CALL = { id: "call_abc", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } };
const USAGE = { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19, prompt_tokens_details: { cached_tokens: 0 } };

/** An app with the Responses route over a stub chat route that answers `answer(chatBody)`. */
function stubApp(answer: (body: J) => { json: J } | { chunks: J[] }) {
  const sent: J[] = [];
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  app.post("/v1/chat/completions", async (c) => {
    const body = await c.req.json();
    sent.push(body);
    const a = answer(body);
    if ("json" in a) return c.json(a.json);
    return streamSSE(c, async (s) => {
      for (const chunk of a.chunks) await s.writeSSE({ data: JSON.stringify(chunk) });
      await s.writeSSE({ data: "[DONE]" });
    });
  });
  registerResponses(app, {} as AppDeps);
  app.onError((err, c) => errorResponse(c, err));
  return { app, sent };
}

const chatJson = (message: J, finish: string) => ({
  id: "chatcmpl-1",
  object: "chat.completion",
  created: 1,
  model: "m",
  system_fingerprint: "fp",
  choices: [{ index: 0, message: { role: "assistant", refusal: null, ...message }, logprobs: null, finish_reason: finish }],
  usage: USAGE,
});
const chunk = (delta: J, finish: string | null = null) => ({
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  created: 1,
  model: "m",
  choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  usage: null,
});
const usageChunk = { id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "m", choices: [], usage: USAGE };

async function events(res: Response): Promise<J[]> {
  assert.equal(res.status, 200);
  const out = (await res.text()).split("\n\n").map((b) => b.split("\n").find((l) => l.startsWith("data: "))?.slice(6)).filter(Boolean)
    .map((d) => JSON.parse(d!));
  out.forEach((e, i) => {
    assert.equal(e.sequence_number, i);
    assertOpenAi("ResponseStreamEvent", e, e.type);
  });
  return out;
}

const TOOLS = [{ type: "function", name: "get_weather", description: "The weather", parameters: { type: "object" }, strict: true }];

Deno.test("responses → chat: items, instructions, text.format, tools and tool_choice in chat's fields", async () => {
  const { app, sent } = stubApp(() => ({ json: chatJson({ content: "ok" }, "stop") }));
  const res = await app.request(
    "/v1/responses",
    json({
      model: "m",
      instructions: "Be brief.",
      input: [
        { role: "user", content: [{ type: "input_text", text: "Weather in Paris and Oslo?" }] },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "Checking.", annotations: [] }] },
        { type: "function_call", call_id: "c1", name: "get_weather", arguments: '{"city":"Paris"}' },
        { type: "function_call", call_id: "c2", name: "get_weather", arguments: '{"city":"Oslo"}' },
        { type: "function_call_output", call_id: "c1", output: "sunny" },
        { type: "function_call_output", call_id: "c2", output: [{ type: "input_text", text: "rain" }] },
      ],
      tools: TOOLS,
      tool_choice: { type: "function", name: "get_weather" },
      parallel_tool_calls: false,
      text: { format: { type: "json_schema", name: "answer", schema: { type: "object" }, strict: true } },
      max_output_tokens: 9,
      include: ["message.output_text.logprobs"],
      top_logprobs: 2,
      metadata: { a: "b" },
    }),
  );
  const r = await res.json();
  assert.equal(res.status, 200, JSON.stringify(r));
  assertOpenAi("Response", r);
  assert.deepEqual(sent[0], {
    model: "m",
    n: 1,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: [{ type: "text", text: "Weather in Paris and Oslo?" }] },
      {
        role: "assistant",
        content: [{ type: "text", text: "Checking." }],
        tool_calls: [
          { id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
          { id: "c2", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
        ],
      },
      { role: "tool", tool_call_id: "c1", content: "sunny" },
      { role: "tool", tool_call_id: "c2", content: [{ type: "text", text: "rain" }] },
    ],
    max_completion_tokens: 9,
    metadata: { a: "b" },
    logprobs: true,
    top_logprobs: 2,
    response_format: { type: "json_schema", json_schema: { name: "answer", schema: { type: "object" }, strict: true } },
    tools: [{
      type: "function",
      function: { name: "get_weather", description: "The weather", parameters: { type: "object" }, strict: true },
    }],
    tool_choice: { type: "function", function: { name: "get_weather" } },
    parallel_tool_calls: false,
  });
  assert.deepEqual(r.tools, TOOLS);
  assert.deepEqual(r.text, { format: { type: "json_schema", name: "answer", schema: { type: "object" }, strict: true } });

  // json_object; a string input; stream asks chat for its usage
  await app.request("/v1/responses", json({ model: "m", input: "hi", text: { format: { type: "json_object" } }, stream: true }));
  assert.deepEqual(sent[1], {
    model: "m",
    n: 1,
    messages: [{ role: "user", content: "hi" }],
    response_format: { type: "json_object" },
    stream: true,
    stream_options: { include_usage: true },
  });
});

Deno.test("chat's tool calls → function_call items (JSON) and function_call events (stream), OpenAI's shapes", async () => {
  // tool calls only: no message item
  let answer: { json: J } | { chunks: J[] } = { json: chatJson({ content: null, tool_calls: [CALL] }, "tool_calls") };
  const { app } = stubApp(() => answer);
  const body = { model: "m", input: "Weather?", tools: TOOLS, tool_choice: "required" };
  let r = await (await app.request("/v1/responses", json(body))).json();
  assertOpenAi("Response", r);
  assert.equal(r.status, "completed");
  assert.equal(r.output.length, 1);
  assert.deepEqual(
    { ...r.output[0], id: undefined },
    { type: "function_call", id: undefined, call_id: "call_abc", name: "get_weather", arguments: '{"city":"Paris"}', status: "completed" },
  );
  assert.match(r.output[0].id, /^fc_/);
  assert.equal(r.usage.output_tokens, 7);

  // text, then a call
  answer = { json: chatJson({ content: "Let me check.", tool_calls: [CALL] }, "tool_calls") };
  r = await (await app.request("/v1/responses", json(body))).json();
  assertOpenAi("Response", r);
  assert.deepEqual(r.output.map((i: J) => i.type), ["message", "function_call"]);
  assert.equal(r.output[0].content[0].text, "Let me check.");

  // streamed: the role chunk, text, then a call whose arguments come in pieces, then usage
  answer = {
    chunks: [
      chunk({ role: "assistant", content: "" }),
      chunk({ content: "Let me" }),
      chunk({ content: " check." }),
      chunk({ tool_calls: [{ index: 0, id: "call_abc", type: "function", function: { name: "get_weather", arguments: "" } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
      chunk({}, "tool_calls"),
      usageChunk,
    ],
  };
  const es = await events(await app.request("/v1/responses", json({ ...body, stream: true })));
  assert.deepEqual(es.map((e) => e.type), [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
  ]);
  const added = es[9], done = es[13], argsDone = es[12], last = es.at(-1);
  assert.equal(added.output_index, 1);
  assert.equal(added.item.arguments, "");
  assert.equal(argsDone.arguments, '{"city":"Paris"}');
  assert.equal(argsDone.name, "get_weather");
  assert.equal(done.item.arguments, '{"city":"Paris"}');
  assert.equal(done.item.call_id, "call_abc");
  assert.equal(last.response.output[1].id, added.item.id);
  assert.equal(last.response.output[0].content[0].text, "Let me check.");
  assert.equal(last.response.usage.total_tokens, 19);

  // two parallel calls, no text
  answer = {
    chunks: [
      chunk({ role: "assistant", content: "" }),
      chunk({ tool_calls: [{ index: 0, id: "a", type: "function", function: { name: "f", arguments: "{}" } }] }),
      chunk({ tool_calls: [{ index: 1, id: "b", type: "function", function: { name: "g", arguments: "{}" } }] }),
      chunk({}, "tool_calls"),
      usageChunk,
    ],
  };
  const two = await events(await app.request("/v1/responses", json({ ...body, stream: true })));
  assert.deepEqual(two.at(-1).response.output.map((i: J) => [i.type, i.name, i.call_id]), [["function_call", "f", "a"], [
    "function_call",
    "g",
    "b",
  ]]);
});

Deno.test("chat's errors: a 400 names the Responses field; an error chunk mid-stream becomes an error event", async () => {
  let answer: J = null;
  const { app } = stubApp(() => answer);
  const app2 = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  app2.post("/v1/chat/completions", (c) =>
    c.json({
      error: {
        message: "response_format.json_schema.schema: bad keyword",
        type: "invalid_request_error",
        param: "response_format.json_schema.schema",
        code: "x",
      },
    }, 400));
  registerResponses(app2, {} as AppDeps);
  app2.onError((err, c) => errorResponse(c, err));
  const res = await app2.request(
    "/v1/responses",
    json({ model: "m", input: "x", text: { format: { type: "json_schema", name: "n", schema: {} } } }),
  );
  assert.equal(res.status, 400);
  const e = (await res.json()).error;
  assert.equal(e.param, "text.format.schema");
  assertOpenAi("ErrorResponse", { error: e });

  answer = {
    chunks: [
      chunk({ role: "assistant", content: "" }),
      chunk({ content: "Hi" }),
      { error: { message: "the server stopped the request", type: "server_error", param: null, code: "request_aborted" } },
    ],
  };
  const es = await events(await app.request("/v1/responses", json({ model: "m", input: "x", stream: true })));
  assert.equal(es.at(-1).type, "error");
  assert.equal(es.at(-1).code, "request_aborted");
  assertOpenAi("ResponseErrorEvent", es.at(-1));
});
