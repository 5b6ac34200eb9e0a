// quotas_test.ts — the per-tenant limits of the keys file (server/api/limits.ts) over real HTTP
// with two tenants: tokens per minute (429 with the seconds until the minute frees enough, a
// prompt that can never fit is a 400), files, adapters and running jobs (429 insufficient_quota
// naming the limit; deleting frees it), another tenant untouched throughout, per-tenant counters in
// /metrics for the admin; and the keys file refuses a misspelt or bad limit.
import assert from "node:assert/strict";
import { KeyStore } from "../../server/api/auth.ts";
import { TenantAdmission } from "../../server/api/admission.ts";
import { ClientError } from "../../server/util/errors.ts";
import { makeAdapter, STORIES_SHAPE, storiesServer } from "../helpers.ts";

const A = "sk-quota-tenant-a", B = "sk-quota-tenant-b", ADMIN = "sk-quota-admin-1";

Deno.test("keys file: limits per key and defaults; a misspelt or bad limit is refused at start", async () => {
  const ks = await KeyStore.create(
    [{ key: A, tenant: "a", tokens_per_minute: 500, weight: 2 }, { key: "sk-second-a-key", tenant: "a", tokens_per_minute: 300 }, {
      key: B,
      tenant: "b",
    }],
    { max_files: 3 },
  );
  assert.equal(ks.limitsOf("a").tokens_per_minute, 300, "the tighter of a tenant's keys holds");
  assert.equal(ks.limitsOf("a").weight, 2);
  assert.equal(ks.limitsOf("a").max_files, 3);
  assert.equal(ks.limitsOf("b").tokens_per_minute, null);
  assert.equal(ks.limitsOf("b").max_running_jobs, 8);
  await assert.rejects(KeyStore.create([{ key: A, tenant: "a", tokens_per_min: 5 } as never]), /unknown field tokens_per_min/);
  await assert.rejects(KeyStore.create([{ key: A, tenant: "a", max_files: -1 }]), /max_files must be/);
  await assert.rejects(KeyStore.create([{ key: A, tenant: "a", weight: 0 }]), /weight must be/);
  await assert.rejects(KeyStore.create([], { max_adapters: 1.5 }), /defaults: max_adapters/);
});

Deno.test("tokens_per_minute: a rolling minute; Retry-After is when enough tokens age out", () => {
  let now = 1_000_000_000;
  const adm = new TenantAdmission(10, () => ({ tokens_per_minute: 100 }), () => now);
  adm.admit("a", 1, 60)[0]();
  now += 20_000;
  adm.charge("a", 30); // 90 used: 60 at t, 30 at t+20 s
  assert.throws(() => adm.admit("a", 1, 20), (e) => e instanceof ClientError && e.status === 429 && e.retryAfterSeconds === 40);
  assert.throws(() => adm.admit("a", 1, 101), (e) => e instanceof ClientError && e.status === 400);
  adm.admit("b", 1, 100); // another tenant has its own minute
  now += 40_000; // the first 60 have aged out
  assert.equal(adm.tokensLastMinute("a"), 30);
  adm.admit("a", 1, 70);
  assert.throws(() => adm.admit("a", 1, 1), (e) => e instanceof ClientError && e.status === 429);
});

Deno.test({
  name: "quotas over HTTP: tokens per minute, files, adapters, running jobs; the other tenant is untouched; per-tenant metrics",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-quotas-" });
    const s = await storiesServer(root, {
      keys: [
        { key: A, tenant: "a", tokens_per_minute: 40, max_files: 2, max_file_bytes: 4000, max_adapters: 1, max_running_jobs: 1 },
        { key: B, tenant: "b" },
        { key: ADMIN, admin: true },
      ],
    });
    const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
    const base = `http://127.0.0.1:${srv.addr.port}`;
    const call = async (key: string, method: string, path: string, body?: unknown) => {
      const init: RequestInit = { method, headers: { authorization: `Bearer ${key}` } };
      if (body instanceof FormData) init.body = body;
      else if (body !== undefined) {
        init.body = JSON.stringify(body);
        (init.headers as Record<string, string>)["content-type"] = "application/json";
      }
      const r = await fetch(`${base}${path}`, init);
      const text = await r.text();
      return { status: r.status, retryAfter: r.headers.get("retry-after"), body: text.startsWith("{") ? JSON.parse(text) : text };
    };
    const complete = (key: string, prompt: string, max_tokens: number) =>
      call(key, "POST", "/v1/completions", { model: "stories260K", prompt, max_tokens, temperature: 0, ignore_eos: true });
    const upload = (key: string, lines: number) => {
      const form = new FormData();
      form.append("purpose", "fine-tune");
      const jsonl = Array.from(
        { length: lines },
        (_, i) => JSON.stringify({ prompt: `Once upon a time ${i}`, completion: " there was a cat." }),
      );
      form.append("file", new File([jsonl.join("\n") + "\n"], "data.jsonl"));
      return call(key, "POST", "/v1/files", form);
    };
    try {
      // tokens per minute: a few prompt tokens + 30 completion tokens; the same prompt again passes 40
      const first = await complete(A, "Once upon a time there", 30);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.ok(first.body.usage.total_tokens + first.body.usage.prompt_tokens > 40);
      const second = await complete(A, "Once upon a time there", 1);
      assert.equal(second.status, 429, JSON.stringify(second.body));
      assert.equal(second.body.error.code, "rate_limit_exceeded");
      assert.match(second.body.error.message, /tokens_per_minute = 40/);
      const after = Number(second.retryAfter);
      assert.ok(after >= 1 && after <= 60, `Retry-After ${second.retryAfter}`);
      const huge = await complete(A, "Once upon a time there was a little girl who liked to play. ".repeat(5), 1);
      assert.equal(huge.status, 400, "a prompt over the whole minute's tokens can never be admitted");
      assert.match(huge.body.error.message, /can never be admitted/);
      for (let i = 0; i < 3; i++) assert.equal((await complete(B, "Once upon a time there", 16)).status, 200, "b has no token limit");

      // files: two of at most 4000 bytes
      const f1 = await upload(A, 20), f2 = await upload(A, 20);
      assert.equal(f1.status, 200, JSON.stringify(f1.body));
      assert.equal(f2.status, 200, JSON.stringify(f2.body));
      const f3 = await upload(A, 1);
      assert.equal(f3.status, 429);
      assert.equal(f3.body.error.code, "insufficient_quota");
      assert.match(f3.body.error.message, /max_files = 2/);
      assert.ok(f3.retryAfter);
      assert.equal((await call(A, "DELETE", `/v1/files/${f2.body.id}`)).status, 200);
      const big = await upload(A, 80);
      assert.equal(big.status, 429);
      assert.match(big.body.error.message, /max_file_bytes = 4000/);
      assert.equal((await upload(A, 1)).status, 200, "a small one fits again");
      assert.equal((await upload(B, 80)).status, 200, "b's files are its own");

      // running jobs: one at a time; the job's model counts against max_adapters meanwhile
      const job = await call(A, "POST", "/v1/fine_tuning/jobs", {
        model: "stories260K",
        training_file: f1.body.id,
        hyperparameters: { n_epochs: 1, batch_size: 1 },
      });
      assert.equal(job.status, 200, JSON.stringify(job.body));
      const job2 = await call(A, "POST", "/v1/fine_tuning/jobs", { model: "stories260K", training_file: f1.body.id });
      assert.equal(job2.status, 429);
      assert.match(job2.body.error.message, /max_running_jobs = 1/);
      await makeAdapter(`${root}/adapters/a/one`, STORIES_SHAPE, { seed: 1 });
      const reg = await call(A, "POST", "/v1/adapters", { id: "one", path: "a/one" });
      assert.equal(reg.status, 429, "the unfinished job's model takes a's one adapter");
      assert.match(reg.body.error.message, /max_adapters = 1/);
      assert.equal((await call(A, "POST", `/v1/fine_tuning/jobs/${job.body.id}/cancel`)).status, 200);
      for (let i = 0; i < 200; i++) {
        const j = await call(A, "GET", `/v1/fine_tuning/jobs/${job.body.id}`);
        if (j.body.status === "cancelled") break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal((await call(A, "POST", "/v1/adapters", { id: "one", path: "a/one" })).status, 201);
      await makeAdapter(`${root}/adapters/a/two`, STORIES_SHAPE, { seed: 2 });
      const two = await call(A, "POST", "/v1/adapters", { id: "two", path: "a/two" });
      assert.equal(two.status, 429);
      assert.match(two.body.error.message, /max_adapters = 1/);
      await makeAdapter(`${root}/adapters/b/two`, STORIES_SHAPE, { seed: 2 });
      assert.equal((await call(B, "POST", "/v1/adapters", { id: "two", path: "b/two" })).status, 201);

      // per-tenant counters, for the admin only
      assert.equal((await call(A, "GET", "/metrics")).status, 403);
      const m = (await call(ADMIN, "GET", "/metrics")).body as string;
      assert.match(m, /qlora_tenant_requests_total\{tenant="b"\} 3/);
      assert.match(m, /qlora_tenant_requests_rejected_total\{tenant="a",reason="(rate_limit_exceeded|tenant_limit)"\}/);
      assert.match(m, /qlora_tenant_generation_tokens_total\{tenant="b"\} 48/);
      assert.match(m, /qlora_adapter_generation_tokens_total\{tenant="b",model="stories260K"\} 48/);
    } finally {
      await srv.shutdown();
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
