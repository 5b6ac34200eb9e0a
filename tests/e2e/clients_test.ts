// clients_test.ts — third-party clients nobody here wrote, over real HTTP on 127.0.0.1, on the
// default model (stories260K with its chat template from models/): the Vercel AI SDK (`ai`) through
// @ai-sdk/openai-compatible (chat completions) and through @ai-sdk/openai's default provider (which
// calls /v1/responses): generateText and streamText; LangChain's ChatOpenAI: invoke, stream, and
// `useResponsesApi: true`. Each client's text is checked against what the server's own endpoint
// gives for the same request at temperature 0, and every request the clients sent is recorded and
// its answer validated against OpenAI's schemas (Response, each stream event, chat completion and chunk).
import assert from "node:assert/strict";
import { generateText, streamText } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { createOpenAI } from "@ai-sdk/openai";
import { ChatOpenAI } from "@langchain/openai";
import type { Server } from "../../server/server.ts";
import { json, storiesServer } from "../helpers.ts";
import { assertOpenAi } from "../api/openai_schema.ts";

const KEY = "sk-clients-0123456789";
const MODEL = "stories260K";
const TEMPLATE = Deno.readTextFileSync(new URL("../../models/stories260K/chat_template.jinja", import.meta.url));
const PROMPT = "Once upon a time, a little girl";
const MAX = 12;

interface Seen {
  path: string;
  body: Record<string, unknown>;
  status: number;
  text: string;
}

/** Serves the app on 127.0.0.1, recording every /v1 request body and the whole answer. */
function serve(s: Server) {
  const seen: Seen[] = [];
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const body = req.method === "POST" ? await req.clone().json().catch(() => ({})) : {};
    const res = await s.app.fetch(req);
    const [mine, theirs] = res.body ? res.body.tee() : [null, null];
    const entry: Seen = { path: new URL(req.url).pathname, body, status: res.status, text: "" };
    seen.push(entry);
    if (mine) void new Response(mine).text().then((t) => entry.text = t);
    return new Response(theirs, { status: res.status, headers: res.headers });
  });
  return { url: `http://127.0.0.1:${srv.addr.port}`, seen, shutdown: () => srv.shutdown() };
}

/** Validates every recorded answer against OpenAI's schemas. */
async function validate(seen: Seen[]): Promise<void> {
  await new Promise((r) => setTimeout(r, 50)); // the tees' last reads
  assert.ok(seen.length > 0);
  for (const x of seen) {
    assert.equal(x.status, 200, `${x.path} ${JSON.stringify(x.body)} → ${x.text}`);
    const stream = x.body.stream === true;
    if (x.path === "/v1/responses") {
      if (!stream) assertOpenAi("Response", JSON.parse(x.text), "responses");
      else {
        for (const d of x.text.split("\n\n").map((b) => b.split("\n").find((l) => l.startsWith("data: "))?.slice(6)).filter(Boolean)) {
          assertOpenAi("ResponseStreamEvent", JSON.parse(d!), "responses event");
        }
      }
    } else if (x.path === "/v1/chat/completions") {
      if (!stream) assertOpenAi("CreateChatCompletionResponse", JSON.parse(x.text), "chat");
      else {
        for (const d of x.text.split("\n\n").map((b) => b.trim().slice(6)).filter((d) => d && d !== "[DONE]")) {
          assertOpenAi("CreateChatCompletionStreamResponse", JSON.parse(d), "chat chunk");
        }
      }
    }
  }
}

const opts = { sanitizeOps: false, sanitizeResources: false };

async function withClients(fn: (url: string, seen: Seen[], expected: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "qlora-clients-" });
  const s = await storiesServer(root, { chatTemplate: TEMPLATE, keys: [{ key: KEY, tenant: "t1" }] });
  const { url, seen, shutdown } = serve(s);
  try {
    // what the server itself answers at temperature 0
    const res = await s.app.request(
      "/v1/chat/completions",
      json({ model: MODEL, messages: [{ role: "user", content: PROMPT }], temperature: 0, max_completion_tokens: MAX }, {
        authorization: `Bearer ${KEY}`,
      }),
    );
    const expected = (await res.json()).choices[0].message.content as string;
    assert.ok(expected.length > 0);
    await fn(url, seen, expected);
    await validate(seen);
  } finally {
    await shutdown();
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test({
  name: "Vercel AI SDK: generateText and streamText via @ai-sdk/openai-compatible (chat) and @ai-sdk/openai (responses)",
  ...opts,
  fn: async () => {
    await withClients(async (url, seen, expected) => {
      const compatible = createOpenAICompatible({ name: "qlora", baseURL: `${url}/v1`, apiKey: KEY, includeUsage: true });
      const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: KEY });
      for (
        const [name, model, path] of [
          ["openai-compatible", compatible.chatModel(MODEL), "/v1/chat/completions"],
          ["openai (responses)", openai(MODEL), "/v1/responses"],
        ] as const
      ) {
        seen.length = 0;
        const g = await generateText({ model, prompt: PROMPT, temperature: 0, maxOutputTokens: MAX, maxRetries: 0 });
        assert.equal(g.text, expected, name);
        assert.equal(g.finishReason, "length", name);
        assert.ok((g.usage.outputTokens ?? 0) === MAX, `${name}: ${JSON.stringify(g.usage)}`);
        assert.ok((g.usage.inputTokens ?? 0) > 0, name);
        const st = streamText({ model, prompt: PROMPT, temperature: 0, maxOutputTokens: MAX, maxRetries: 0 });
        let text = "";
        for await (const piece of st.textStream) text += piece;
        assert.equal(text, expected, name);
        assert.equal(await st.finishReason, "length", name);
        assert.equal((await st.usage).outputTokens, MAX, name);
        assert.deepEqual([...new Set(seen.map((x) => x.path))], [path], name);
        await validate(seen);
      }
      // a system message and a conversation, through the Responses API
      seen.length = 0;
      const g = await generateText({
        model: openai(MODEL),
        system: "Tell a story.",
        messages: [{ role: "user", content: "Lily had a ball." }, { role: "assistant", content: "She played." }, {
          role: "user",
          content: "Then",
        }],
        temperature: 0,
        maxOutputTokens: 4,
        maxRetries: 0,
      });
      assert.equal(typeof g.text, "string");
      assert.equal(g.usage.outputTokens, 4);
      assert.equal(seen[0].path, "/v1/responses");
    });
  },
});

Deno.test({
  name: "LangChain ChatOpenAI: invoke and stream (chat), and useResponsesApi: true (invoke, stream)",
  ...opts,
  fn: async () => {
    await withClients(async (url, seen, expected) => {
      for (const useResponsesApi of [false, true]) {
        seen.length = 0;
        const llm = new ChatOpenAI({
          model: MODEL,
          apiKey: KEY,
          configuration: { baseURL: `${url}/v1` },
          temperature: 0,
          maxTokens: MAX,
          maxRetries: 0,
          useResponsesApi,
        });
        const what = `useResponsesApi ${useResponsesApi}`;
        const m = await llm.invoke(PROMPT);
        assert.equal(m.text, expected, what);
        assert.equal(m.usage_metadata?.output_tokens, MAX, what);
        let text = "";
        for await (const chunk of await llm.stream(PROMPT)) text += chunk.text;
        assert.equal(text, expected, what);
        const system = await llm.invoke([["system", "Tell a story."], ["human", "Lily had a ball."]]);
        assert.equal(typeof system.text, "string");
        assert.deepEqual([...new Set(seen.map((x) => x.path))], [useResponsesApi ? "/v1/responses" : "/v1/chat/completions"], what);
      }
    });
  },
});
