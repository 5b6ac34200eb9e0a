// openai_test.ts — end to end over real HTTP on 127.0.0.1 with the official `openai` client:
// chat (tiny model with a chat template), streaming, completions (stories260K reproduces
// llama2.c), models, adapters by name, errors as the client's typed exceptions, disconnects.
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createServer, type Server } from "../../server/server.ts";
import { makeAdapter, REFERENCE, STORIES_SHAPE, storiesServer, tinyModel } from "../helpers.ts";

const KEY = "sk-e2e-tenant-key";

function serve(s: Server): { url: string; shutdown: () => Promise<void> } {
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
  return {
    url: `http://127.0.0.1:${srv.addr.port}`,
    shutdown: async () => {
      await srv.shutdown();
      await s.close();
    },
  };
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "openai client: completions reproduce llama2.c (plain and streamed), adapters by name, models, errors",
  ...opts,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-e2e-" });
    const s = await storiesServer(root, { keys: [{ key: KEY, tenant: "t1" }] });
    const { url, shutdown } = serve(s);
    try {
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
      const c = REFERENCE.cases[0];
      const n = c.generated_ids.length;
      const extra = { ignore_eos: true } as Record<string, unknown>;
      const r = await client.completions.create({ model: "stories260K", prompt: c.prompt, max_tokens: n, temperature: 0, ...extra });
      assert.equal(c.prompt + r.choices[0].text, c.full_text);
      assert.equal(r.usage?.completion_tokens, n);
      const stream = await client.completions.create({
        model: "stories260K",
        prompt: c.prompt,
        max_tokens: n,
        temperature: 0,
        stream: true,
        ...extra,
      });
      let text = "";
      for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
      assert.equal(c.prompt + text, c.full_text);

      await makeAdapter(`${root}/adapters/t1/x`, STORIES_SHAPE, { seed: 9 });
      const res = await fetch(`${url}/v1/load_lora_adapter`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ lora_name: "x", lora_path: "t1/x" }),
      });
      assert.equal(res.status, 200, await res.text());
      const ra = await client.completions.create({ model: "x", prompt: c.prompt, max_tokens: 12, temperature: 0, ...extra });
      assert.notEqual(ra.choices[0].text, r.choices[0].text.slice(0, ra.choices[0].text.length));
      const models = await client.models.list();
      assert.deepEqual(models.data.map((m) => m.id).sort(), ["stories260K", "x"]);

      await assert.rejects(client.completions.create({ model: "nope", prompt: "x" }), (e: unknown) => {
        assert.ok(e instanceof OpenAI.NotFoundError);
        assert.equal(e.code, "model_not_found");
        return true;
      });
      await assert.rejects(client.completions.create({ model: "stories260K", prompt: "x", max_tokens: -1 }), OpenAI.BadRequestError);
      await assert.rejects(client.completions.create({ model: "stories260K", prompt: "x", max_tokens: 100000 }), OpenAI.BadRequestError);
      await assert.rejects(
        client.chat.completions.create({ model: "stories260K", messages: [{ role: "user", content: "hi" }] }),
        OpenAI.BadRequestError,
      );
      const bad = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sk-wrong-key", maxRetries: 0 });
      await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
      // a raw malformed body over HTTP, then the server still answers
      const mal = await fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
        body: "{",
      });
      assert.equal(mal.status, 400);
      assert.equal((await mal.json()).error.code, "invalid_json");

      // a client that disconnects mid-stream cancels its sequence
      const ac = new AbortController();
      const long = await client.completions.create({
        model: "stories260K",
        prompt: "Once",
        max_tokens: 400,
        temperature: 0,
        stream: true,
        ...extra,
      }, { signal: ac.signal });
      let got = 0;
      try {
        for await (const _ of long) if (++got === 3) ac.abort();
      } catch { /* aborted */ }
      for (let i = 0; i < 100 && s.deps.host.outstanding > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(s.deps.host.outstanding, 0);
      const health = await fetch(`${url}/health`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
    } finally {
      await shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "openai client: chat and streamed chat on the tiny model with a chat template",
  ...opts,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-e2e-chat-" });
    const s = await createServer({
      modelDir: await tinyModel(),
      modelId: "tiny",
      quant: "nf4",
      adapterRoot: `${root}/a`,
      dataDir: `${root}/d`,
      threads: 1,
      env: false,
      log: null,
    });
    const { url, shutdown } = serve(s);
    try {
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
      const messages = [{ role: "system" as const, content: "You are terse." }, { role: "user" as const, content: "Say hello." }];
      const r = await client.chat.completions.create({
        model: "tiny",
        messages,
        max_completion_tokens: 8,
        temperature: 0,
        seed: 1,
        logprobs: true,
        top_logprobs: 2,
      });
      assert.equal(r.object, "chat.completion");
      assert.equal(r.choices[0].message.role, "assistant");
      assert.equal(typeof r.choices[0].message.content, "string");
      assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
      assert.ok(r.usage!.prompt_tokens > 0);
      assert.equal(r.choices[0].logprobs!.content!.length, r.usage!.completion_tokens);
      assert.equal(r.choices[0].logprobs!.content![0].top_logprobs.length, 2);
      const stream = await client.chat.completions.create({
        model: "tiny",
        messages,
        max_tokens: 8,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "", usage = null, role = null;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        for (const ch of chunk.choices) {
          text += ch.delta.content ?? "";
          role ??= ch.delta.role ?? null;
        }
      }
      assert.equal(role, "assistant");
      assert.equal(text, r.choices[0].message.content);
      assert.equal(usage!.completion_tokens, r.usage!.completion_tokens);
      const n = await client.chat.completions.create({
        model: "tiny",
        messages,
        max_tokens: 4,
        n: 3,
        temperature: 1,
        top_p: 0.9,
        seed: 3,
        presence_penalty: 0.5,
        frequency_penalty: 0.5,
        user: "u1",
      });
      assert.equal(n.choices.length, 3);
      const m = await client.models.retrieve("tiny");
      assert.equal(m.id, "tiny");
      await assert.rejects(client.chat.completions.create({ model: "tiny", messages: [] }), OpenAI.BadRequestError);
      // no parameter silently ignored: the deprecated functions and a schema keyword the grammar cannot
      // enforce are typed 400s naming the field; caller-describing fields pass
      const refused = async (extra: Record<string, unknown>, param: string, code: string) => {
        await assert.rejects(client.chat.completions.create({ model: "tiny", messages, max_tokens: 2, ...extra }), (e: unknown) => {
          assert.ok(e instanceof OpenAI.BadRequestError, String(e));
          assert.equal(e.param, param);
          assert.equal(e.code, code);
          return true;
        });
      };
      await refused({ functions: [{ name: "f", parameters: {} }] }, "functions", "unsupported_parameter");
      await refused(
        { response_format: { type: "json_schema", json_schema: { name: "s", schema: { type: "array", uniqueItems: true } } } },
        "response_format.json_schema.schema",
        "unsupported_value",
      );
      await refused({ store: true }, "store", "unsupported_value");
      const ok = await client.chat.completions.create({
        model: "tiny",
        messages,
        max_tokens: 2,
        response_format: { type: "text" },
        metadata: { app: "e2e" },
        store: false,
        service_tier: "auto",
        safety_identifier: "h1",
        prompt_cache_key: "k1",
        modalities: ["text"],
      });
      assert.equal(ok.choices[0].message.refusal, null);
      assert.equal(typeof ok.system_fingerprint, "string");
    } finally {
      await shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
});
