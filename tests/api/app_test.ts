// app_test.ts — the HTTP API in process (app.request) on stories260K: llama2.c's greedy
// continuations (streamed or not), adapters (registration, different outputs, mixed batches equal
// to requests alone, unload while in use), OpenAI-shaped errors, queue limits, metrics, docs.
import assert from "node:assert/strict";
import { KeyStore } from "../../server/api/auth.ts";
import type { Server } from "../../server/server.ts";
import { json, makeAdapter, REFERENCE, sseData, STORIES_SHAPE, storiesServer } from "../helpers.ts";

const MODEL = "stories260K";

interface Chunk {
  choices: { text: string }[];
  usage?: { completion_tokens: number } | null;
}

async function withServer(fn: (s: Server, root: string) => Promise<void>, extra: Parameters<typeof storiesServer>[1] = {}) {
  const root = await Deno.makeTempDir({ prefix: "qlora-api-" });
  const s = await storiesServer(root, extra);
  try {
    await fn(s, root);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

async function complete(s: Server, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const res = await s.app.request("/v1/completions", json({ model: MODEL, temperature: 0, ...body }, headers));
  return { status: res.status, body: await res.json() };
}

async function streamText(s: Server, body: Record<string, unknown>): Promise<{ text: string; chunks: Chunk[] }> {
  const res = await s.app.request("/v1/completions", json({ model: MODEL, temperature: 0, stream: true, ...body }));
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
  const data = sseData(await res.text());
  assert.equal(data.at(-1), "[DONE]");
  const chunks: Chunk[] = data.slice(0, -1).map((d) => JSON.parse(d));
  return { text: chunks.flatMap((c) => c.choices.map((x) => x.text)).join(""), chunks };
}

async function expectError(res: Response, status: number, code?: string) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}`);
  const b = await res.json();
  assert.equal(typeof b.error.message, "string");
  assert.equal(typeof b.error.type, "string");
  assert.ok("param" in b.error && "code" in b.error);
  if (code) assert.equal(b.error.code, code);
  return b.error;
}

Deno.test("completions at temperature 0 reproduce llama2.c (JSON and SSE); prompt + completion = full text", async () => {
  await withServer(async (s) => {
    for (const c of REFERENCE.cases) {
      const n = c.generated_ids.length;
      const r = await complete(s, { prompt: c.prompt, max_tokens: n, ignore_eos: true });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.object, "text_completion");
      assert.equal(c.prompt + r.body.choices[0].text, c.full_text);
      assert.equal(r.body.usage.prompt_tokens, c.prompt_ids.length);
      assert.equal(r.body.usage.completion_tokens, n);
      assert.equal(r.body.choices[0].finish_reason, "length");
      const st = await streamText(s, { prompt: c.prompt, max_tokens: n, ignore_eos: true, stream_options: { include_usage: true } });
      assert.equal(c.prompt + st.text, c.full_text);
      const last = st.chunks.at(-1);
      assert.deepEqual(last?.choices, []);
      assert.equal(last?.usage?.completion_tokens, n);
      // token-id prompts work too
      const ids = await complete(s, { prompt: c.prompt_ids, max_tokens: 4, ignore_eos: true });
      assert.equal(ids.body.choices[0].text, r.body.choices[0].text.slice(0, ids.body.choices[0].text.length));
    }
    // n, seeds, stop strings, logprobs
    const c = REFERENCE.cases[0];
    const multi = await complete(s, { prompt: [c.prompt, c.prompt], n: 2, max_tokens: 3, temperature: 0.8, seed: 7, logprobs: 2 });
    assert.equal(multi.status, 200);
    assert.equal(multi.body.choices.length, 4);
    assert.deepEqual(multi.body.choices.map((x: { index: number }) => x.index), [0, 1, 2, 3]);
    assert.equal(multi.body.choices[0].text, multi.body.choices[2].text, "same seed, same prompt → same text");
    assert.equal(multi.body.choices[0].logprobs.tokens.length, 3);
    assert.ok(multi.body.choices[0].logprobs.token_logprobs.every((x: number) => x <= 0));
    const full = REFERENCE.cases[0].full_text.slice(c.prompt.length);
    const stopAt = full.indexOf(" was");
    const stopped = await complete(s, { prompt: c.prompt, max_tokens: 20, stop: [" was"] });
    assert.equal(stopped.body.choices[0].text, full.slice(0, stopAt));
    assert.equal(stopped.body.choices[0].finish_reason, "stop");
  });
});

Deno.test("bad inputs answer 4xx in OpenAI's shape and the server keeps serving", async () => {
  await withServer(async (s) => {
    const post = (path: string, body: string, headers: Record<string, string> = { "content-type": "application/json" }) =>
      s.app.request(path, { method: "POST", headers, body });
    await expectError(await post("/v1/completions", "{not json"), 400, "invalid_json");
    let e = await expectError(await post("/v1/completions", JSON.stringify({ model: MODEL, prompt: 5 })), 400, "invalid_value");
    assert.equal(e.param, "prompt");
    e = await expectError(await post("/v1/completions", JSON.stringify({ model: MODEL, prompt: "x", max_tokens: -3 })), 400);
    assert.equal(e.param, "max_tokens");
    await expectError(
      await post("/v1/completions", JSON.stringify({ model: MODEL, prompt: "x", max_tokens: 1e9 })),
      400,
      "context_length_exceeded",
    );
    await expectError(await post("/v1/completions", JSON.stringify({ model: MODEL, prompt: "x", temperature: "hot" })), 400);
    await expectError(await post("/v1/completions", JSON.stringify({ model: MODEL, prompt: [99999] })), 400);
    await expectError(await post("/v1/completions", JSON.stringify({ model: "nope", prompt: "x" })), 404, "model_not_found");
    await expectError(
      await post("/v1/chat/completions", JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }] })),
      400,
      "chat_template_missing",
    );
    await expectError(await post("/v1/chat/completions", JSON.stringify({ model: MODEL, messages: [] })), 400);
    await expectError(
      await post("/v1/completions", JSON.stringify({ model: MODEL, prompt: "once ".repeat(2000) })),
      400,
      "context_length_exceeded",
    );
    await expectError(await s.app.request("/v1/nothing"), 404);
    const r = await complete(s, { prompt: "Once upon a time", max_tokens: 2 });
    assert.equal(r.status, 200);
  });
  await withServer(async (s) => {
    const big = JSON.stringify({ model: MODEL, prompt: "a".repeat(5000) });
    await expectError(await s.app.request("/v1/completions", json(JSON.parse(big))), 413, "request_too_large");
    const res = await s.app.request("/health");
    assert.equal(res.status, 200);
    assert.ok(res.headers.get("x-request-id"));
    const r2 = await s.app.request("/health", { headers: { "x-request-id": "abc-123" } });
    assert.equal(r2.headers.get("x-request-id"), "abc-123");
  }, { bodyLimitBytes: 4096 });
});

Deno.test("body limits per route: a 5 MiB chat body is a 413 before parsing; a 5 MiB upload is a file", async () => {
  await withServer(async (s) => {
    const messages = [{ role: "user", content: "a".repeat(5 << 20) }];
    const t0 = performance.now();
    await expectError(await s.app.request("/v1/chat/completions", json({ model: MODEL, messages })), 413, "request_too_large");
    assert.ok(performance.now() - t0 < 1000, "refused without parsing or tokenizing it");
    const line = JSON.stringify({ prompt: "x", completion: "y".repeat(1000) }) + "\n";
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", new File([line.repeat(Math.ceil((5 << 20) / line.length))], "big.jsonl"));
    const up = await s.app.request("/v1/files", { method: "POST", body: form });
    assert.equal(up.status, 200, await up.clone().text());
    assert.ok((await up.json()).bytes > 5 << 20);
  });
});

Deno.test("adapters: different greedy outputs; a mixed batch equals each request alone; unload lets running requests finish", async () => {
  await withServer(async (s, root) => {
    await makeAdapter(`${root}/adapters/a`, STORIES_SHAPE, { seed: 11 });
    await makeAdapter(`${root}/adapters/b`, STORIES_SHAPE, { seed: 22, r: 8, modules: ["q_proj", "v_proj", "up_proj", "down_proj"] });
    let res = await s.app.request("/v1/adapters", json({ id: "ad-a", path: "a" }));
    assert.equal(res.status, 201, await res.clone().text());
    const created = await res.json();
    assert.equal(created.r, 4);
    assert.equal(created.resident, false);
    res = await s.app.request("/v1/load_lora_adapter", json({ lora_name: "ad-b", lora_path: "b" }));
    assert.equal(res.status, 200);
    assert.match(await res.text(), /Success/);
    await expectError(await s.app.request("/v1/adapters", json({ id: "ad-a", path: "a" })), 409);

    const prompt = "Once upon a time";
    const alone: Record<string, string> = {};
    for (const m of [MODEL, "ad-a", "ad-b"]) {
      const r = await complete(s, { model: m, prompt, max_tokens: 24, ignore_eos: true });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      alone[m] = r.body.choices[0].text;
    }
    assert.equal(prompt + alone[MODEL], REFERENCE.cases[0].full_text.slice(0, (prompt + alone[MODEL]).length));
    assert.notEqual(alone["ad-a"], alone[MODEL]);
    assert.notEqual(alone["ad-b"], alone[MODEL]);
    assert.notEqual(alone["ad-a"], alone["ad-b"]);

    // all at once (several of each, so they share steps), plus a streamed one
    const models = [MODEL, "ad-a", "ad-b", "ad-b", MODEL, "ad-a"];
    let maxBatch = 0;
    const prev = s.deps.host.onStep;
    s.deps.host.onStep = (step, st) => {
      maxBatch = Math.max(maxBatch, step.sequences);
      prev?.(step, st);
    };
    const together = await Promise.all(models.map((m) => complete(s, { model: m, prompt, max_tokens: 24, ignore_eos: true })));
    together.forEach((r, i) => assert.equal(r.body.choices[0].text, alone[models[i]], `request ${i} (${models[i]}) in a mixed batch`));
    assert.ok(maxBatch >= 3, `requests were batched (max batch ${maxBatch})`);
    const st = await Promise.all([
      streamText(s, { model: "ad-a", prompt, max_tokens: 24, ignore_eos: true }),
      complete(s, { model: "ad-b", prompt, max_tokens: 24, ignore_eos: true }),
    ]);
    assert.equal(st[0].text, alone["ad-a"]);

    // models list and details
    const models2 = await (await s.app.request("/v1/models")).json();
    const ids = models2.data.map((m: { id: string }) => m.id);
    assert.deepEqual(ids.sort(), [MODEL, "ad-a", "ad-b"].sort());
    const ada = models2.data.find((m: { id: string }) => m.id === "ad-a");
    assert.equal(ada.parent, MODEL);
    const base = await (await s.app.request(`/v1/models/${MODEL}`)).json();
    assert.ok(base.memory.total_bytes > 0);
    assert.ok(base.memory.kv_cache_bytes > 0);
    assert.equal((await (await s.app.request("/v1/adapters/ad-a")).json()).resident, true);

    // unload while a request runs: it finishes with the same text; later requests get 404
    const running = s.app.request(
      "/v1/completions",
      json({ model: "ad-a", prompt, max_tokens: 24, ignore_eos: true, temperature: 0, stream: true }),
    );
    const resp = await running;
    const reader = resp.body!.getReader();
    const first = await reader.read();
    assert.ok(!first.done);
    res = await s.app.request("/v1/unload_lora_adapter", json({ lora_name: "ad-a" }));
    assert.equal(res.status, 200);
    let rest = new TextDecoder().decode(first.value);
    while (true) {
      const r = await reader.read();
      if (r.done) break;
      rest += new TextDecoder().decode(r.value);
    }
    const text = sseData(rest).slice(0, -1).map((d) => JSON.parse(d).choices.map((c: { text: string }) => c.text).join("")).join("");
    assert.equal(text, alone["ad-a"]);
    await expectError(await s.app.request("/v1/completions", json({ model: "ad-a", prompt, max_tokens: 2 })), 404, "model_not_found");
    await expectError(await s.app.request("/v1/unload_lora_adapter", json({ lora_name: "ad-a" })), 404);
    res = await s.app.request("/v1/adapters/ad-b", { method: "DELETE" });
    assert.equal((await res.json()).deleted, true);
    assert.equal((await (await s.app.request("/v1/adapters")).json()).data.length, 0);

    // re-registering the same name gives the new files
    res = await s.app.request("/v1/adapters", json({ id: "ad-a", path: "b", preload: true }));
    assert.equal(res.status, 201);
    assert.equal((await complete(s, { model: "ad-a", prompt, max_tokens: 24, ignore_eos: true })).body.choices[0].text, alone["ad-b"]);

    // upload (multipart)
    const form = new FormData();
    form.set("id", "uploaded");
    form.set("adapter_config", new Blob([await Deno.readFile(`${root}/adapters/a/adapter_config.json`)]), "adapter_config.json");
    form.set("adapter_model", new Blob([await Deno.readFile(`${root}/adapters/a/adapter_model.safetensors`)]), "adapter_model.safetensors");
    res = await s.app.request("/v1/adapters/upload", { method: "POST", body: form });
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal((await complete(s, { model: "uploaded", prompt, max_tokens: 24, ignore_eos: true })).body.choices[0].text, alone["ad-a"]);

    const metrics = await (await s.app.request("/metrics")).text();
    assert.match(metrics, /^vllm:lora_requests_info\{max_lora="16",running_lora_adapters="[^"]*",waiting_lora_adapters="[^"]*"\} \d+/m);
    assert.match(metrics, /^qlora_time_to_first_token_seconds_count [1-9]/m);
    assert.match(metrics, /^qlora_inter_token_latency_seconds_bucket\{le="\+Inf"\} [1-9]/m);
    assert.match(metrics, /^qlora_batch_size_count [1-9]/m);
    assert.match(metrics, /^qlora_resident_adapters [1-9]/m);
    assert.match(metrics, /^qlora_http_requests_total\{method="POST",route="\/v1\/completions",status="200"\} [1-9]/m);
  });
});

Deno.test("adapter paths stay inside the adapter root; broken adapter files answer 400", async () => {
  await withServer(async (s, root) => {
    await makeAdapter(`${root}/outside`, STORIES_SHAPE, { seed: 1 });
    await Deno.mkdir(`${root}/adapters`, { recursive: true });
    await Deno.symlink(`${root}/outside`, `${root}/adapters/link`);
    for (const path of ["../outside", `${root}/outside`, "link", "/etc", "missing", "a/../../outside"]) {
      await expectError(await s.app.request("/v1/adapters", json({ id: "x", path })), 400);
      await expectError(await s.app.request("/v1/load_lora_adapter", json({ lora_name: "x", lora_path: path })), 400);
    }
    await makeAdapter(`${root}/adapters/trunc`, STORIES_SHAPE, { seed: 2 });
    const f = `${root}/adapters/trunc/adapter_model.safetensors`;
    const bytes = await Deno.readFile(f);
    await Deno.writeFile(f, bytes.subarray(0, bytes.length >> 1));
    await expectError(await s.app.request("/v1/adapters", json({ id: "t", path: "trunc" })), 400, "invalid_adapter");
    await Deno.writeTextFile(`${root}/adapters/trunc/adapter_config.json`, "{}");
    await expectError(await s.app.request("/v1/load_lora_adapter", json({ lora_name: "t", lora_path: "trunc" })), 400, "invalid_adapter");
    await expectError(await s.app.request("/v1/adapters", json({ id: "../bad", path: "trunc" })), 400);
    await expectError(await s.app.request("/v1/adapters", json({ id: MODEL, path: "trunc" })), 409);
    // a registered adapter whose files break later fails its request with a 400, not the server
    await makeAdapter(`${root}/adapters/later`, STORIES_SHAPE, { seed: 3 });
    assert.equal((await s.app.request("/v1/adapters", json({ id: "later", path: "later" }))).status, 201);
    await Deno.writeFile(`${root}/adapters/later/adapter_model.safetensors`, new Uint8Array(10));
    await expectError(await s.app.request("/v1/completions", json({ model: "later", prompt: "x", max_tokens: 2 })), 400, "invalid_adapter");
    assert.equal((await complete(s, { prompt: "Once", max_tokens: 2 })).status, 200);
  });
});

Deno.test("tenancy and auth: keys map to tenants; other tenants' adapters are 404; admin sees all", async () => {
  const keys = [
    { key: "sk-tenant-a-0001", tenant: "a" },
    { key: "sk-tenant-b-0001", tenant: "b" },
    { key: "sk-admin-000001", admin: true },
  ];
  await withServer(async (s, root) => {
    const A = { authorization: "Bearer sk-tenant-a-0001" },
      B = { authorization: "Bearer sk-tenant-b-0001" },
      ADMIN = { authorization: "Bearer sk-admin-000001" };
    await expectError(await s.app.request("/v1/models"), 401, "invalid_api_key");
    await expectError(await s.app.request("/v1/models", { headers: { authorization: "Bearer wrong-key-123" } }), 401, "invalid_api_key");
    assert.equal((await s.app.request("/health")).status, 200);
    // /metrics names every tenant's adapters: the admin's only
    await expectError(await s.app.request("/metrics"), 401, "invalid_api_key");
    await expectError(await s.app.request("/metrics", { headers: A }), 403, "permission_denied");
    assert.equal((await s.app.request("/metrics", { headers: ADMIN })).status, 200);
    // unknown HTTP methods do not create label series
    for (const m of ["FOO", "BAR", "BAZ"]) await s.app.request("/v1/models", { method: m, headers: ADMIN });
    const text = await (await s.app.request("/metrics", { headers: ADMIN })).text();
    assert.doesNotMatch(text, /method="(FOO|BAR|BAZ)"/);
    assert.match(text, /method="other"/);
    // tenant names are safe folder names: an admin cannot upload into "..", "." or "-x"
    for (const tenant of ["..", ".", "-x", "a/b"]) {
      const form = new FormData();
      form.append("id", "up");
      form.append("tenant", tenant);
      form.append("adapter_config", new File(["{}"], "adapter_config.json"));
      form.append("adapter_model", new File([new Uint8Array(8)], "adapter_model.safetensors"));
      const r = await s.app.request("/v1/adapters/upload", { method: "POST", body: form, headers: ADMIN });
      assert.equal(r.status, 400, tenant);
      assert.equal((await r.json()).error.param, "tenant", tenant);
    }
    await assert.rejects(KeyStore.create([{ key: "sk-dotdot-0001", tenant: ".." }]), /tenant names are 1-64/);
    await makeAdapter(`${root}/adapters/a/mine`, STORIES_SHAPE, { seed: 5 });
    await makeAdapter(`${root}/adapters/b/theirs`, STORIES_SHAPE, { seed: 6 });
    // a tenant registers only from its own folder
    // a tenant registers only from its own folder; a path elsewhere answers exactly as a missing one
    // (errors do not tell which paths exist on the server, and never show the server's folders)
    const outside = await (await s.app.request("/v1/adapters", json({ id: "x", path: "b/theirs" }, A))).json();
    const missing = await (await s.app.request("/v1/adapters", json({ id: "x", path: "b/nothing" }, A))).json();
    const system = await (await s.app.request("/v1/adapters", json({ id: "x", path: "/etc" }, A))).json();
    assert.equal(outside.error.code, "invalid_path");
    assert.equal(outside.error.message.replace("theirs", "X"), missing.error.message.replace("nothing", "X"));
    assert.equal(system.error.message.replace("/etc", "X"), missing.error.message.replace("b/nothing", "X"));
    for (const e of [outside, missing, system]) assert.ok(!e.error.message.includes(root), e.error.message);
    assert.equal((await s.app.request("/v1/adapters", json({ id: "mine", path: "a/mine" }, A))).status, 201);
    await expectError(await s.app.request("/v1/adapters", json({ id: "y", path: "a/mine", tenant: "b" }, A)), 403);
    assert.equal(
      (await s.app.request("/v1/adapters", json({ id: "mine", path: "b/theirs", tenant: "b" }, ADMIN))).status,
      201,
      "same name, other tenant",
    );
    const a = await complete(s, { model: "mine", prompt: "Once", max_tokens: 6, ignore_eos: true }, A);
    const b = await complete(s, { model: "mine", prompt: "Once", max_tokens: 6, ignore_eos: true }, B);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.notEqual(a.body.choices[0].text, b.body.choices[0].text, "each tenant gets its own 'mine'");
    assert.equal((await s.app.request("/v1/adapters", json({ id: "private", path: "a/mine" }, A))).status, 201);
    await expectError(await s.app.request("/v1/adapters/private", { headers: B }), 404);
    await expectError(await s.app.request("/v1/models/private", { headers: B }), 404);
    await expectError(
      await s.app.request("/v1/completions", json({ model: "private", prompt: "x", max_tokens: 1 }, B)),
      404,
      "model_not_found",
    );
    await expectError(await s.app.request("/v1/adapters/private", { method: "DELETE", headers: B }), 404);
    await expectError(await s.app.request("/v1/unload_lora_adapter", json({ lora_name: "private" }, B)), 404);
    const listB = await (await s.app.request("/v1/models", { headers: B })).json();
    assert.deepEqual(listB.data.map((m: { id: string }) => m.id).sort(), [MODEL, "mine"].sort());
    const listAdmin = await (await s.app.request("/v1/adapters", { headers: ADMIN })).json();
    assert.equal(listAdmin.data.length, 3);
    assert.equal((await s.app.request("/v1/adapters/private", { headers: ADMIN })).status, 200);
  }, { keys });
});

Deno.test("queue full answers 429; a client that goes away cancels its sequence", async () => {
  await withServer(async (s) => {
    const ac = new AbortController();
    const long = await s.app.request(
      new Request("http://x/v1/completions", {
        ...json({ model: MODEL, prompt: "Once", max_tokens: 400, ignore_eos: true, stream: true }),
        signal: ac.signal,
      }),
    );
    assert.equal(long.status, 200);
    const reader = long.body!.getReader();
    await reader.read();
    await expectError(await s.app.request("/v1/completions", json({ model: MODEL, prompt: "x", max_tokens: 2 })), 429, "queue_full");
    ac.abort();
    await reader.cancel().catch(() => {});
    for (let i = 0; i < 100 && s.deps.host.outstanding > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(s.deps.host.outstanding, 0, "the cancelled sequence left the engine");
    // /health and the running gauge follow at once, not at the next request's step
    for (let i = 0; i < 50 && (await (await s.app.request("/health")).json()).running > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal((await (await s.app.request("/health")).json()).running, 0, "/health is not stale after the disconnect");
    assert.match(await (await s.app.request("/metrics")).text(), /^vllm:num_requests_running 0$/m);
    assert.equal((await complete(s, { prompt: "Once", max_tokens: 2 })).status, 200);
    assert.match(await (await s.app.request("/metrics")).text(), /^qlora_requests_rejected_total 1/m);
  }, { maxNumSeqs: 1, maxQueue: 0 });
});

Deno.test("GET /openapi.json is OpenAPI 3.1 from the zod schemas; /docs serves the reference", async () => {
  await withServer(async (s) => {
    const doc = await (await s.app.request("/openapi.json")).json();
    assert.equal(doc.openapi, "3.1.0");
    for (
      const p of [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/models/{id}",
        "/v1/adapters",
        "/v1/adapters/{id}",
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
      ]
    ) {
      assert.ok(doc.paths[p], `path ${p}`);
    }
    for (const n of ["CompletionRequest", "ChatCompletionRequest", "ChatCompletion", "Completion", "Error", "Adapter", "Model"]) {
      assert.ok(doc.components.schemas[n], n);
    }
    const docs = await s.app.request("/docs");
    assert.equal(docs.status, 200);
    assert.match(await docs.text(), /openapi\.json/);
  });
});

Deno.test("registrations survive a restart (files that went bad are skipped)", async () => {
  const root = await Deno.makeTempDir({ prefix: "qlora-restart-" });
  try {
    await makeAdapter(`${root}/adapters/a`, STORIES_SHAPE, { seed: 1 });
    await makeAdapter(`${root}/adapters/b`, STORIES_SHAPE, { seed: 2 });
    let s = await storiesServer(root);
    let textA = "";
    try {
      assert.equal((await s.app.request("/v1/adapters", json({ id: "a", path: "a" }))).status, 201);
      assert.equal((await s.app.request("/v1/adapters", json({ id: "b", path: "b" }))).status, 201);
      textA = (await complete(s, { model: "a", prompt: "Once", max_tokens: 8, ignore_eos: true })).body.choices[0].text;
    } finally {
      await s.close();
    }
    await Deno.remove(`${root}/adapters/b`, { recursive: true });
    s = await storiesServer(root);
    try {
      const list = await (await s.app.request("/v1/adapters")).json();
      assert.deepEqual(list.data.map((x: { id: string }) => x.id), ["a"]);
      assert.equal((await complete(s, { model: "a", prompt: "Once", max_tokens: 8, ignore_eos: true })).body.choices[0].text, textA);
    } finally {
      await s.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
