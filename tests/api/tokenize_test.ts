// tokenize_test.ts — vLLM's /tokenize and /detokenize on stories260K: a round trip (with and
// without BOS, token strings), per model or adapter id with tenancy (another tenant's adapter is a
// 404, no key a 401), chat messages through the chat template; GET /version.
import assert from "node:assert/strict";
import { json, makeAdapter, REFERENCE, STORIES_SHAPE, storiesServer } from "../helpers.ts";
import { QloraClient } from "../../sdk/mod.ts";

const MODEL = "stories260K";
const KEYS = [{ key: "sk-tenant-a-0001", tenant: "a" }, { key: "sk-tenant-b-0001", tenant: "b" }];
const A = { authorization: "Bearer sk-tenant-a-0001" }, B = { authorization: "Bearer sk-tenant-b-0001" };

Deno.test("tokenize/detokenize round trip on stories260K, per model or adapter, with tenancy; /version", async () => {
  const root = await Deno.makeTempDir({ prefix: "qlora-tok-" });
  const s = await storiesServer(root, { keys: KEYS, chatTemplate: "{% for m in messages %}{{ m['content'] }}\n{% endfor %}" });
  try {
    await makeAdapter(`${root}/adapters/a/mine`, STORIES_SHAPE, { seed: 5 });
    assert.equal((await s.app.request("/v1/adapters", json({ id: "mine", path: "a/mine" }, A))).status, 201);
    for (const c of REFERENCE.cases) {
      for (const model of [MODEL, "mine", undefined]) {
        const res = await s.app.request("/tokenize", json({ model, prompt: c.prompt, return_token_strs: true }, A));
        const t = await res.json();
        assert.equal(res.status, 200, JSON.stringify(t));
        assert.deepEqual(t.tokens, c.prompt_ids, "the reference ids (with BOS)");
        assert.equal(t.count, c.prompt_ids.length);
        assert.equal(t.max_model_len, s.deps.host.info.maxModelLen);
        assert.equal(t.token_strs.length, t.count);
        const bare = await (await s.app.request("/tokenize", json({ model, prompt: c.prompt, add_special_tokens: false }, A))).json();
        assert.deepEqual(bare.tokens, c.prompt_ids.slice(1));
        assert.equal(bare.token_strs, null);
        const d = await s.app.request("/detokenize", json({ model, tokens: bare.tokens }, A));
        assert.equal(d.status, 200);
        assert.deepEqual(await d.json(), { prompt: c.prompt });
      }
    }
    // chat messages through the template (with the generation prompt; no extra BOS)
    const chat = await (await s.app.request("/tokenize", json({ model: MODEL, messages: [{ role: "user", content: "Once upon" }] }, A)))
      .json();
    const plain = await (await s.app.request("/tokenize", json({ model: MODEL, prompt: "Once upon\n", add_special_tokens: false }, A)))
      .json();
    assert.deepEqual(chat.tokens, plain.tokens);
    // tenancy: B does not see A's adapter; no key is a 401; an unknown model a 404
    for (const path of ["/tokenize", "/detokenize"]) {
      const body = path === "/tokenize" ? { model: "mine", prompt: "x" } : { model: "mine", tokens: [1] };
      const res = await s.app.request(path, json(body, B));
      assert.equal(res.status, 404);
      assert.equal((await res.json()).error.code, "model_not_found");
      assert.equal((await s.app.request(path, json(body))).status, 401);
      assert.equal((await s.app.request(path, json({ ...body, model: "nope" }, A))).status, 404);
    }
    const bad = await s.app.request("/detokenize", json({ model: MODEL, tokens: [1e6] }, A));
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, "tokens");
    // version (public, like /health)
    const v = await s.app.request("/version");
    assert.equal(v.status, 200);
    assert.match((await v.json()).version, /^\d+\.\d+\.\d+/);
    // the SDK's client.tokenizer (paths beside /v1)
    const client = new QloraClient({
      baseURL: "http://server/v1",
      apiKey: "sk-tenant-a-0001",
      fetch: (input, init) => Promise.resolve(s.app.request(String(input), init)),
    });
    const viaSdk = await client.tokenizer.tokenize({ model: "mine", prompt: REFERENCE.cases[0].prompt });
    assert.deepEqual(viaSdk.tokens, REFERENCE.cases[0].prompt_ids);
    assert.equal((await client.tokenizer.detokenize({ tokens: viaSdk.tokens.slice(1) })).prompt, REFERENCE.cases[0].prompt);
    assert.match((await client.tokenizer.version()).version, /^\d/);
    const doc = await (await s.app.request("/openapi.json")).json();
    for (const p of ["/tokenize", "/detokenize", "/version"]) assert.ok(doc.paths[p], p);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
});
