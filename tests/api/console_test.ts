// console_test.ts — the web console over HTTP, without a browser (tests/e2e/console_test.ts drives
// one): every page is HTML with labelled controls and no tenant data, every asset it names is served
// by the server itself (no CDN, for the console and /docs alike), and the residency routes the
// console's load/unload buttons call keep tenancy.
import assert from "node:assert/strict";
import { json, makeAdapter, STORIES_SHAPE, storiesServer } from "../helpers.ts";

const A = { authorization: "Bearer sk-console-api-a" }, B = { authorization: "Bearer sk-console-api-b" };

Deno.test("console: pages are labelled HTML, and every script, style sheet and the /docs bundle comes from this server", async () => {
  const root = await Deno.makeTempDir({ prefix: "qlora-console-api-" });
  const s = await storiesServer(root, { keys: [{ key: "sk-console-api-a", tenant: "a" }] });
  try {
    const assets = new Set<string>();
    for (
      const path of [
        "/",
        "/console/jobs",
        "/console/jobs/ftjob-abc",
        "/console/files",
        "/console/models",
        "/console/playground",
        "/console/server",
      ]
    ) {
      const res = await s.app.request(path);
      assert.equal(res.status, 200, path);
      assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
      const html = await res.text();
      assert.match(html, /^<!doctype html><html lang="en">/, path);
      assert.match(html, /data-needs-login="true"/, path);
      assert.match(html, /<main id="main"/, path);
      // every form control has a label
      for (const m of html.matchAll(/<(?:input|select|textarea)[^>]* id="([^"]+)"/g)) {
        assert.match(html, new RegExp(`<label for="${m[1]}"`), `${path}: #${m[1]}`);
      }
      for (const m of html.matchAll(/(?:src|href)="([^"]+)"/g)) {
        assert.ok(/^[/#]/.test(m[1]), `${path} names ${m[1]}, which is not on this server`);
        if (m[1].startsWith("/console/assets/")) assets.add(m[1]);
      }
    }
    assert.equal((await s.app.request("/console/jobs/..%2Fx")).status, 404);

    const docs = await (await s.app.request("/docs")).text();
    const scripts = [...docs.matchAll(/<script[^>]* src="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(scripts, ["/console/assets/scalar.js"]);
    assert.doesNotMatch(docs, /https?:\/\//, "/docs names no other site");
    assets.add("/console/assets/scalar.js");

    assert.deepEqual([...assets].sort(), [
      "/console/assets/console.css",
      "/console/assets/console.js",
      "/console/assets/scalar.js",
      "/console/assets/uplot.css",
      "/console/assets/uplot.js",
    ]);
    for (const a of assets) {
      const res = await s.app.request(a);
      assert.equal(res.status, 200, a);
      assert.match(res.headers.get("content-type") ?? "", a.endsWith(".js") ? /^text\/javascript/ : /^text\/css/);
      assert.ok((await res.arrayBuffer()).byteLength > 1000, a);
    }
    const missing = await s.app.request("/console/assets/..%2F..%2Fdeno.json");
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, "not_found");
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("POST /v1/adapters/{id}/load and /unload change residency only, for the adapter's own tenant", async () => {
  const root = await Deno.makeTempDir({ prefix: "qlora-console-api-" });
  const s = await storiesServer(root, { keys: [{ key: "sk-console-api-a", tenant: "a" }, { key: "sk-console-api-b", tenant: "b" }] });
  try {
    await makeAdapter(`${root}/adapters/a/x`, STORIES_SHAPE, { seed: 3 });
    assert.equal((await s.app.request("/v1/adapters", json({ id: "x", path: "a/x" }, A))).status, 201);
    const get = async () => await (await s.app.request("/v1/adapters/x", { headers: A })).json();
    assert.equal((await get()).resident, false);
    const loaded = await s.app.request("/v1/adapters/x/load", { method: "POST", headers: A });
    assert.equal(loaded.status, 200);
    assert.equal((await loaded.json()).resident, true);
    const other = await s.app.request("/v1/adapters/x/load", { method: "POST", headers: B });
    assert.equal(other.status, 404);
    assert.equal((await other.json()).error.code, "adapter_not_found");
    assert.equal((await s.app.request("/v1/adapters/x/unload", { method: "POST", headers: B })).status, 404);
    const unloaded = await s.app.request("/v1/adapters/x/unload", { method: "POST", headers: A });
    assert.equal(unloaded.status, 200);
    assert.equal((await unloaded.json()).resident, false);
    assert.equal((await get()).id, "x", "still registered");
    // and a request loads it again on demand
    const c = await s.app.request("/v1/completions", json({ model: "x", prompt: "Once", max_tokens: 2 }, A));
    assert.equal(c.status, 200, await c.text());
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
});
