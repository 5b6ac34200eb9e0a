// tenants_test.ts — one tenant's flood cannot shut out another: each tenant may have at most its
// max_concurrent_requests generation requests running or waiting (the keys file's, or half the
// server's capacity); past it that tenant gets 429 tenant_limit with Retry-After, while another
// tenant's requests are admitted, run at once (the flooding tenant gives up running slots) and are
// answered as if alone.
import assert from "node:assert/strict";
import { REFERENCE, storiesServer } from "../helpers.ts";

const A = "sk-flood-tenant-a", B = "sk-quiet-tenant-b", C = "sk-small-tenant-c";

Deno.test({
  name: "fair admission: tenant A floods past its share and gets 429 tenant_limit; tenant B is admitted and answered as alone",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-tenants-" });
    const s = await storiesServer(root, {
      keys: [{ key: A, tenant: "a" }, { key: B, tenant: "b" }, { key: C, tenant: "c", max_concurrent_requests: 1 }],
      maxNumSeqs: 4,
      maxQueue: 4, // capacity 8: a tenant's default share is 4
    });
    const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
    const url = `http://127.0.0.1:${srv.addr.port}/v1/completions`;
    const post = (key: string, body: Record<string, unknown>) =>
      fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const c = REFERENCE.cases[0];
    const greedy = { model: "stories260K", prompt: c.prompt, max_tokens: c.generated_ids.length, temperature: 0, ignore_eos: true };
    try {
      // A holds 4 long streams (its share), so a 5th and 6th are refused, naming the limit
      const floods = await Promise.all(
        Array.from({ length: 4 }, () => post(A, { model: "stories260K", prompt: "Once", max_tokens: 400, ignore_eos: true, stream: true })),
      );
      for (const f of floods) assert.equal(f.status, 200);
      const readers = floods.map((f) => f.body!.getReader());
      await Promise.all(readers.map((r) => r.read()));
      for (let i = 0; i < 2; i++) {
        const r = await post(A, greedy);
        assert.equal(r.status, 429);
        assert.ok(r.headers.get("retry-after"));
        const e = (await r.json()).error;
        assert.equal(e.code, "tenant_limit");
        assert.match(e.message, /max_concurrent_requests = 4/);
      }
      // B is admitted while A floods, and gets exactly its tokens alone; A's streams hold every
      // running slot, so B runs only because A gives slots up (fair-share preemption): B is done
      // long before A's 400-token streams
      let aFinished = 0;
      const drains = readers.map(async (r) => {
        while (!(await r.read()).done);
        aFinished++;
      });
      const bs = await Promise.all(Array.from({ length: 3 }, () => post(B, greedy)));
      for (const b of bs) {
        assert.equal(b.status, 200);
        assert.equal(c.prompt + (await b.json()).choices[0].text, c.full_text);
      }
      assert.equal(aFinished, 0, "B finished while all of A's streams still ran");
      // a per-key limit from the keys file
      // (a long stream: C runs at once now, and a short one could end before the second request)
      const c1 = post(C, { model: "stories260K", prompt: "Once", max_tokens: 400, ignore_eos: true, stream: true });
      const first = await c1;
      const reader = first.body!.getReader();
      await reader.read();
      const c2 = await post(C, greedy);
      assert.equal(c2.status, 429);
      assert.match((await c2.json()).error.message, /max_concurrent_requests = 1/);
      await reader.cancel();
      // once A's streams end, A is admitted again
      for (const r of readers) await r.cancel();
      await Promise.all(drains);
      let again = 429;
      for (let i = 0; i < 100 && again === 429; i++) {
        const r = await post(A, { ...greedy, max_tokens: 2 });
        again = r.status;
        await r.body?.cancel();
        if (again === 429) await new Promise((res) => setTimeout(res, 20));
      }
      assert.equal(again, 200);
    } finally {
      await srv.shutdown();
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
