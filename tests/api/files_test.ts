// files_test.ts — /v1/files through app.request on a test app that registers the files routes
// (auth as the server does it): upload, list with cursor pages, retrieve, content, delete;
// malformed JSONL (the error names the line), oversized files, wrong purpose; tenancy.
import assert from "node:assert/strict";
import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../server/api/deps.ts";
import { authMiddleware, KeyStore } from "../../server/api/auth.ts";
import { errorResponse, validationHook } from "../../server/api/errors.ts";
import { registerFilesRoutes } from "../../server/api/routes/files.ts";
import { Store } from "../../server/store/db.ts";
import { FileStore } from "../../server/store/files.ts";

const KEY_A = "sk-acme-0123456789", KEY_B = "sk-beta-0123456789";

async function setup(maxBytes = 4096) {
  const root = await Deno.makeTempDir({ prefix: "qlora-files-" });
  const store = new Store(`${root}/qlora.db`);
  const files = new FileStore(store, `${root}/files`, { maxBytes });
  const keys = await KeyStore.create([{ key: KEY_A, tenant: "acme" }, { key: KEY_B, tenant: "beta" }]);
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  app.use("/v1/*", authMiddleware(keys));
  registerFilesRoutes(app, { files });
  app.onError((err, c) => errorResponse(c, err));
  return {
    app,
    files,
    root,
    async close() {
      store.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

function upload(text: string, opts: { purpose?: string; name?: string; key?: string } = {}): RequestInit {
  const form = new FormData();
  form.append("purpose", opts.purpose ?? "fine-tune");
  form.append("file", new File([text], opts.name ?? "train.jsonl", { type: "application/jsonl" }));
  return { method: "POST", body: form, headers: auth(opts.key ?? KEY_A) };
}

const LINE = JSON.stringify({ messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello!" }] });
const PROMPT = JSON.stringify({ prompt: "2+2=", completion: "4" });

Deno.test("files: upload, retrieve, content, list in cursor pages, delete", async () => {
  const s = await setup();
  try {
    const text = `${LINE}\n${PROMPT}\n`;
    const res = await s.app.request("/v1/files", upload(text));
    assert.equal(res.status, 200, await res.clone().text());
    const f = await res.json();
    assert.match(f.id, /^file-/);
    assert.equal(f.object, "file");
    assert.equal(f.bytes, new TextEncoder().encode(text).length);
    assert.equal(f.filename, "train.jsonl");
    assert.equal(f.purpose, "fine-tune");
    assert.equal(f.status, "processed");
    assert.equal(typeof f.created_at, "number");

    const got = await (await s.app.request(`/v1/files/${f.id}`, { headers: auth(KEY_A) })).json();
    assert.deepEqual(got, f);
    const content = await s.app.request(`/v1/files/${f.id}/content`, { headers: auth(KEY_A) });
    assert.equal(content.status, 200);
    assert.equal(await content.text(), text);

    const ids = [f.id];
    for (let i = 0; i < 4; i++) ids.push((await (await s.app.request("/v1/files", upload(LINE))).json()).id);
    const page1 = await (await s.app.request("/v1/files?limit=2", { headers: auth(KEY_A) })).json();
    assert.equal(page1.object, "list");
    assert.deepEqual(page1.data.map((x: { id: string }) => x.id), [ids[4], ids[3]]);
    assert.equal(page1.has_more, true);
    const page2 = await (await s.app.request(`/v1/files?limit=2&after=${page1.last_id}`, { headers: auth(KEY_A) })).json();
    assert.deepEqual(page2.data.map((x: { id: string }) => x.id), [ids[2], ids[1]]);
    const page3 = await (await s.app.request(`/v1/files?limit=2&after=${page2.last_id}`, { headers: auth(KEY_A) })).json();
    assert.deepEqual(page3.data.map((x: { id: string }) => x.id), [ids[0]]);
    assert.equal(page3.has_more, false);

    const del = await s.app.request(`/v1/files/${f.id}`, { method: "DELETE", headers: auth(KEY_A) });
    assert.deepEqual(await del.json(), { id: f.id, object: "file", deleted: true });
    assert.equal((await s.app.request(`/v1/files/${f.id}`, { headers: auth(KEY_A) })).status, 404);
    assert.equal((await s.app.request(`/v1/files/${f.id}/content`, { headers: auth(KEY_A) })).status, 404);
  } finally {
    await s.close();
  }
});

Deno.test("files: malformed JSONL is refused on upload with the line named; oversized files and other purposes too", async () => {
  const s = await setup(4096);
  try {
    const cases: [string, RegExp][] = [
      [`${LINE}\n${LINE}\n{"messages": [{"role": "user", "content": "x"}\n`, /line 3: not valid JSON/],
      [`${LINE}\n{"messages": [{"role": "wizard", "content": "x"}]}\n`, /line 2: messages\[0\]\.role/],
      [`${LINE}\n\n{"messages": [{"role": "user", "content": "only a question"}]}\n`, /line 3: .*no assistant message/],
      [`{"prompt": "a"}\n`, /line 1: "completion"/],
      [`[1, 2]\n`, /line 1: each line must be a JSON object/],
      [`{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}\n`, /line 1: messages\[0\]\.weight must be 0 or 1/],
      ["\n\n", /no examples/],
    ];
    for (const [text, re] of cases) {
      const res = await s.app.request("/v1/files", upload(text));
      assert.equal(res.status, 400, text);
      const body = await res.json();
      assert.match(body.error.message, re);
      assert.equal(body.error.type, "invalid_request_error");
      assert.equal(body.error.param, "file");
      assert.equal(body.error.code, "invalid_file");
    }
    const big = (LINE + "\n").repeat(Math.ceil(5000 / (LINE.length + 1)));
    const res = await s.app.request("/v1/files", upload(big));
    assert.equal(res.status, 413);
    const e = await res.json();
    assert.equal(e.error.code, "file_too_large");
    assert.match(e.error.message, /limit is 4096/);

    const wrong = await s.app.request("/v1/files", upload(LINE, { purpose: "assistants" }));
    assert.equal(wrong.status, 400);
    assert.equal((await wrong.json()).error.param, "purpose");
    const bytes = new Uint8Array([0xff, 0xfe, 0x00]);
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", new File([bytes], "bin.jsonl"));
    const bin = await s.app.request("/v1/files", { method: "POST", body: form, headers: auth(KEY_A) });
    assert.equal(bin.status, 400);
    assert.match((await bin.json()).error.message, /UTF-8/);
    const noFile = new FormData();
    noFile.append("purpose", "fine-tune");
    const nf = await s.app.request("/v1/files", { method: "POST", body: noFile, headers: auth(KEY_A) });
    assert.equal(nf.status, 400);
    // nothing was stored
    assert.equal((await (await s.app.request("/v1/files", { headers: auth(KEY_A) })).json()).data.length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("files: another tenant can neither see, read nor delete a tenant's file; no key is a 401", async () => {
  const s = await setup();
  try {
    const f = await (await s.app.request("/v1/files", upload(LINE))).json();
    for (const [path, method] of [[`/v1/files/${f.id}`, "GET"], [`/v1/files/${f.id}/content`, "GET"], [`/v1/files/${f.id}`, "DELETE"]]) {
      const res = await s.app.request(path, { method, headers: auth(KEY_B) });
      assert.equal(res.status, 404, `${method} ${path}`);
      const body = await res.json();
      assert.equal(body.error.code, "file_not_found");
    }
    assert.equal((await (await s.app.request("/v1/files", { headers: auth(KEY_B) })).json()).data.length, 0);
    assert.equal((await (await s.app.request("/v1/files", { headers: auth(KEY_A) })).json()).data.length, 1);
    assert.equal((await s.app.request("/v1/files", upload(LINE, { key: "sk-wrong-000000000" }))).status, 401);
    assert.equal((await s.app.request("/v1/files")).status, 401);
  } finally {
    await s.close();
  }
});

Deno.test("files: a temp file that a crash left mid-upload is swept when the server's store starts; complete files stay", async () => {
  const s = await setup();
  try {
    const res = await s.app.request("/v1/files", upload(LINE));
    assert.equal(res.status, 200);
    const kept = (await res.json()).id;
    const tmp = `${s.root}/files/.file-crashed.jsonl.tmp-${crypto.randomUUID()}`;
    await Deno.writeTextFile(tmp, LINE); // what kill -9 during writeFileAtomic leaves
    const restarted = new Store(`${s.root}/qlora.db`);
    new FileStore(restarted, `${s.root}/files`, { sweepTemp: true });
    restarted.close();
    await assert.rejects(Deno.stat(tmp), Deno.errors.NotFound);
    assert.equal(new TextDecoder().decode(await s.files.content({ tenant: "acme", admin: false }, kept)), LINE);
  } finally {
    await s.close();
  }
});
