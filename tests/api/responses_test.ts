// responses_test.ts — POST /v1/responses on stories260K (its chat template from models/): every
// response and stream event validates against OpenAI's published schemas (Response and each
// event type); the output equals chat's for the same conversation (the route runs chat's path),
// streamed or not, with logprobs and adapters; the stream's event order and sequence numbers;
// stateless refusals and chat's refusals named by the Responses field; a client leaving a stream cancels it.
import assert from "node:assert/strict";
import type { Server } from "../../server/server.ts";
import { json, makeAdapter, STORIES_SHAPE, storiesServer } from "../helpers.ts";
import { assertOpenAi } from "./openai_schema.ts";

const MODEL = "stories260K";
const TEMPLATE = Deno.readTextFileSync(new URL("../../models/stories260K/chat_template.jinja", import.meta.url));

async function withServer(fn: (s: Server, root: string) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "qlora-responses-" });
  const s = await storiesServer(root, { chatTemplate: TEMPLATE });
  try {
    await fn(s, root);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

// deno-lint-ignore no-explicit-any
type J = any;

async function ok(res: Response): Promise<J> {
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

/** The events of a Responses stream: `event:` must name the data's type. */
async function events(res: Response): Promise<J[]> {
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
  const out: J[] = [];
  for (const block of (await res.text()).split("\n\n").map((b) => b.trim()).filter(Boolean)) {
    const lines = block.split("\n");
    const event = lines.find((l) => l.startsWith("event: "))?.slice(7);
    const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
    assert.notEqual(data, "[DONE]", "a Responses stream has no [DONE]");
    const e = JSON.parse(data);
    assert.equal(event, e.type);
    out.push(e);
  }
  return out;
}

const EVENT_SCHEMA: Record<string, string> = {
  "response.created": "ResponseCreatedEvent",
  "response.in_progress": "ResponseInProgressEvent",
  "response.output_item.added": "ResponseOutputItemAddedEvent",
  "response.content_part.added": "ResponseContentPartAddedEvent",
  "response.output_text.delta": "ResponseTextDeltaEvent",
  "response.output_text.done": "ResponseTextDoneEvent",
  "response.content_part.done": "ResponseContentPartDoneEvent",
  "response.output_item.done": "ResponseOutputItemDoneEvent",
  "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
  "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
  "response.completed": "ResponseCompletedEvent",
  "response.incomplete": "ResponseIncompleteEvent",
  error: "ResponseErrorEvent",
};

function checkEvents(es: J[], what: string): void {
  es.forEach((e, i) => {
    assert.equal(e.sequence_number, i, what);
    const def = EVENT_SCHEMA[e.type];
    assert.ok(def, `${what}: unexpected event ${e.type}`);
    assertOpenAi(def, e, `${what} ${e.type}`);
    assertOpenAi("ResponseStreamEvent", e, `${what} ${e.type}`);
  });
}

const post = (s: Server, path: string, body: unknown) => s.app.request(path, json(body));
const chatText = (b: J) => b.choices[0].message.content as string;
const outputText = (r: J) => r.output.filter((i: J) => i.type === "message").flatMap((i: J) => i.content.map((p: J) => p.text)).join("");

Deno.test("responses: OpenAI's Response and stream events; the output is chat's for the same conversation, streamed or not", async () => {
  await withServer(async (s) => {
    const cases: { resp: Record<string, unknown>; chat: Record<string, unknown> }[] = [
      { resp: { input: "Once upon a time" }, chat: { messages: [{ role: "user", content: "Once upon a time" }] } },
      {
        resp: {
          instructions: "Be kind.",
          input: [
            { role: "user", content: [{ type: "input_text", text: "Lily had a ball." }] },
            { type: "message", role: "assistant", content: [{ type: "output_text", text: "She played.", annotations: [] }] },
            { type: "message", role: "user", content: "Then" },
          ],
        },
        chat: {
          messages: [
            { role: "system", content: "Be kind." },
            { role: "user", content: "Lily had a ball." },
            { role: "assistant", content: "She played." },
            { role: "user", content: "Then" },
          ],
        },
      },
    ];
    for (const { resp, chat } of cases) {
      for (const max of [6, 200]) {
        const what = `${JSON.stringify(resp).slice(0, 60)} max ${max}`;
        const c = await ok(await post(s, "/v1/chat/completions", { model: MODEL, temperature: 0, max_completion_tokens: max, ...chat }));
        const r = await ok(await post(s, "/v1/responses", { model: MODEL, temperature: 0, max_output_tokens: max, ...resp }));
        assertOpenAi("Response", r, what);
        assert.equal(r.object, "response");
        assert.match(r.id, /^resp_/);
        assert.equal(r.store, false);
        assert.equal(outputText(r), chatText(c), what);
        const incomplete = c.choices[0].finish_reason === "length";
        assert.equal(r.status, incomplete ? "incomplete" : "completed", what);
        assert.deepEqual(r.incomplete_details, incomplete ? { reason: "max_output_tokens" } : null);
        assert.equal(r.output[0].status, r.status);
        assert.deepEqual(r.usage, {
          input_tokens: c.usage.prompt_tokens,
          input_tokens_details: { cached_tokens: r.usage.input_tokens_details.cached_tokens, cache_write_tokens: 0 },
          output_tokens: c.usage.completion_tokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: c.usage.total_tokens,
        });
        assert.equal(r.instructions, (resp.instructions as string | undefined) ?? null);
        assert.equal(r.max_output_tokens, max);

        const es = await events(
          await post(s, "/v1/responses", { model: MODEL, temperature: 0, max_output_tokens: max, stream: true, ...resp }),
        );
        checkEvents(es, what);
        const types = es.map((e) => e.type);
        const deltas = types.filter((t) => t === "response.output_text.delta").length;
        assert.deepEqual(types, [
          "response.created",
          "response.in_progress",
          "response.output_item.added",
          "response.content_part.added",
          ...Array(deltas).fill("response.output_text.delta"),
          "response.output_text.done",
          "response.content_part.done",
          "response.output_item.done",
          incomplete ? "response.incomplete" : "response.completed",
        ]);
        assert.equal(es[0].response.status, "in_progress");
        const text = es.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("");
        assert.equal(text, chatText(c), what);
        assert.equal(es.find((e) => e.type === "response.output_text.done").text, text);
        const last = es.at(-1).response;
        assert.equal(outputText(last), text);
        assert.equal(last.status, r.status);
        assert.equal(last.usage.output_tokens, r.usage.output_tokens);
        assert.equal(last.id, es[0].response.id);
        const itemId = es[2].item.id;
        assert.ok(es.filter((e) => e.item_id !== undefined).every((e) => e.item_id === itemId));
      }
    }
  });
});

Deno.test("responses: logprobs (include or top_logprobs) are chat's; adapters by model; recorded fields echoed", async () => {
  await withServer(async (s, root) => {
    const c = await ok(
      await post(s, "/v1/chat/completions", {
        model: MODEL,
        temperature: 0,
        max_completion_tokens: 5,
        logprobs: true,
        top_logprobs: 2,
        messages: [{ role: "user", content: "Tom saw a dog" }],
      }),
    );
    for (const extra of [{ include: ["message.output_text.logprobs"], top_logprobs: 2 }, { top_logprobs: 2 }]) {
      const body = { model: MODEL, temperature: 0, max_output_tokens: 5, input: "Tom saw a dog", ...extra };
      const r = await ok(await post(s, "/v1/responses", body));
      assertOpenAi("Response", r);
      const lp = r.output[0].content[0].logprobs;
      assert.equal(lp.length, 5);
      assert.deepEqual(lp, c.choices[0].logprobs.content);
      const es = await events(await post(s, "/v1/responses", { ...body, stream: true }));
      checkEvents(es, "logprobs stream");
      const streamed = es.filter((e) => e.type === "response.output_text.delta").flatMap((e) => e.logprobs);
      assert.deepEqual(streamed.map((l: J) => [l.token, l.logprob]), lp.map((l: J) => [l.token, l.logprob]));
      assert.deepEqual(streamed[0].top_logprobs.map((t: J) => t.token), lp[0].top_logprobs.map((t: J) => t.token));
    }
    const plain = await ok(await post(s, "/v1/responses", { model: MODEL, temperature: 0, max_output_tokens: 5, input: "Tom saw a dog" }));
    assert.deepEqual(plain.output[0].content[0].logprobs, []);

    await makeAdapter(`${root}/adapters/a`, STORIES_SHAPE, { seed: 5 });
    assert.equal((await post(s, "/v1/adapters", { id: "ad", path: "a" })).status, 201);
    const messages = [{ role: "user", content: "Once upon a time" }];
    const ca = await ok(await post(s, "/v1/chat/completions", { model: "ad", temperature: 0, max_completion_tokens: 12, messages }));
    const ra = await ok(await post(s, "/v1/responses", { model: "ad", temperature: 0, max_output_tokens: 12, input: "Once upon a time" }));
    const rb = await ok(await post(s, "/v1/responses", { model: MODEL, temperature: 0, max_output_tokens: 12, input: "Once upon a time" }));
    assert.equal(ra.model, "ad");
    assert.equal(outputText(ra), chatText(ca));
    assert.notEqual(outputText(ra), outputText(rb));

    const meta = await ok(
      await post(s, "/v1/responses", {
        model: MODEL,
        input: "x",
        max_output_tokens: 1,
        metadata: { app: "demo" },
        user: "u1",
        store: false,
        service_tier: "auto",
        tools: [],
        tool_choice: "auto",
        text: { format: { type: "text" } },
        truncation: "disabled",
      }),
    );
    assertOpenAi("Response", meta);
    assert.deepEqual(meta.metadata, { app: "demo" });
    assert.equal(meta.service_tier, "auto");
  });
});

Deno.test("responses: stateless refusals, and chat's refusals and errors named by the Responses field", async () => {
  await withServer(async (s) => {
    const base = { model: MODEL, input: "Once upon", max_output_tokens: 2 };
    const error = async (body: Record<string, unknown>, status = 400) => {
      const res = await post(s, "/v1/responses", { ...base, ...body });
      const text = await res.text();
      assert.equal(res.status, status, text);
      const b = JSON.parse(text);
      assertOpenAi("ErrorResponse", b);
      return b.error as { message: string; param: string | null; code: string | null };
    };
    let e = await error({ store: true });
    assert.deepEqual([e.param, e.code], ["store", "unsupported_value"]);
    assert.match(e.message, /stateless/);
    e = await error({ previous_response_id: "resp_1" });
    assert.deepEqual([e.param, e.code], ["previous_response_id", "unsupported_parameter"]);
    e = await error({ background: true });
    assert.deepEqual([e.param, e.code], ["background", "unsupported_value"]);
    e = await error({ input: [{ role: "user", content: [{ type: "input_image", image_url: "http://x/y.png" }] }] });
    assert.deepEqual([e.param, e.code], ["input.0.content.0.type", "unsupported_value"]);
    e = await error({ input: [{ type: "item_reference", id: "msg_1" }] });
    assert.deepEqual([e.param, e.code], ["input.0.type", "unsupported_value"]);
    e = await error({ tools: [{ type: "web_search" }] });
    assert.deepEqual([e.param, e.code], ["tools.0.type", "unsupported_value"]);
    e = await error({ input: [{ role: "user", content: "x", frobnicate: 1 }] });
    assert.deepEqual([e.param, e.code], ["input.0.frobnicate", "unknown_parameter"]);
    e = await error({ model: "nope" }, 404);
    assert.deepEqual([e.param, e.code], ["model", "model_not_found"]);
    e = await error({ max_output_tokens: 100000 });
    assert.deepEqual([e.param, e.code], ["input", "context_length_exceeded"]);
    e = await error({ instructions: "x", input: [{ role: "user", content: "y" }], max_output_tokens: 100000 });
    assert.equal(e.code, "context_length_exceeded");

    // what chat refuses is refused the same way (same code and message), named by the Responses field
    const chatError = async (body: Record<string, unknown>) => {
      const res = await post(s, "/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "Once upon" }], ...body });
      return res.status === 200 ? null : (await res.json()).error;
    };
    const pairs: [Record<string, unknown>, Record<string, unknown>, string][] = [
      [{ text: { format: { type: "json_object" } } }, { response_format: { type: "json_object" } }, "text.format"],
      [
        { text: { format: { type: "json_schema", name: "x", schema: { type: "object" } } } },
        { response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } } },
        "text.format",
      ],
      [
        { tools: [{ type: "function", name: "f", parameters: { type: "object" } }] },
        { tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }] },
        "tools",
      ],
      [
        { tools: [{ type: "function", name: "f" }], tool_choice: { type: "function", name: "f" } },
        { tools: [{ type: "function", function: { name: "f" } }], tool_choice: { type: "function", function: { name: "f" } } },
        "tool",
      ],
      [
        { input: [{ role: "user", content: "x" }, { type: "function_call", call_id: "c1", name: "f", arguments: "{}" }] },
        {
          messages: [{ role: "user", content: "x" }, {
            role: "assistant",
            tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
          }],
        },
        "input.1",
      ],
    ];
    for (const [resp, chat, param] of pairs) {
      const want = await chatError(chat);
      const res = await post(s, "/v1/responses", { ...base, ...resp });
      if (want === null) {
        // chat implements it (structured outputs / tools merged): so does this route
        assert.equal(res.status, 200, await res.text());
        continue;
      }
      const got = (await res.json()).error;
      assert.equal(got.code, want.code, JSON.stringify(got));
      assert.equal(got.message, want.message);
      assert.ok(got.param.startsWith(param), `${got.param} for ${want.param}`);
    }
  });
});

Deno.test("responses: a client that leaves a stream cancels its generation", async () => {
  await withServer(async (s) => {
    const health = async () => (await (await s.app.request("/health")).json()) as { running: number; waiting: number };
    const ac = new AbortController();
    const res = await s.app.request(
      new Request("http://x/v1/responses", {
        ...json({ model: MODEL, input: "Once upon a time", max_output_tokens: 500, temperature: 1, stream: true }),
        signal: ac.signal,
      }),
    );
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let seen = "";
    while (!seen.includes("response.output_text.delta")) {
      const r = await reader.read();
      assert.ok(!r.done, seen);
      seen += new TextDecoder().decode(r.value);
    }
    assert.equal((await health()).running, 1, "generating");
    ac.abort();
    await reader.cancel().catch(() => {});
    let h = await health();
    for (let i = 0; i < 200 && h.running + h.waiting > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      h = await health();
    }
    assert.deepEqual([h.running, h.waiting], [0, 0]);
    // it ended because it was cancelled, not because it was done
    const metrics = await (await s.app.request("/metrics")).text();
    assert.match(
      metrics,
      /^qlora_request_success_total\{finish_reason="abort"\} 1$/m,
      metrics.split("\n").filter((l) => l.startsWith("qlora_request_success")).join("\n"),
    );
  });
});
