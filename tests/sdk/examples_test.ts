// examples_test.ts — sdk/examples type-check (deno check) and run as written against a live server
// (chat, streaming, a per-request adapter, and the fine-tune walk-through when the server has the
// fine-tuning routes).
import assert from "node:assert/strict";
import { KEYS, modelShape, ROOT, startServer, writeAdapter } from "./helpers.ts";

const EXAMPLES = ["chat.ts", "streaming.ts", "adapter.ts", "fine_tune.ts"];

async function run(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), { args, env, cwd: ROOT, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("the SDK and its examples type-check (deno check)", async () => {
  const r = await run(["check", "sdk/mod.ts", ...EXAMPLES.map((e) => `sdk/examples/${e}`)]);
  assert.equal(r.code, 0, r.stderr);
});

Deno.test({
  name: "the examples run as written against a live server",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const server = await startServer();
    try {
      const env = { QLORA_BASE_URL: server.baseURL, QLORA_API_KEY: KEYS.admin, NO_COLOR: "1" };
      const example = (name: string, ...args: string[]) => run(["run", "--allow-net", "--allow-env", `sdk/examples/${name}`, ...args], env);

      await t.step("chat.ts", async () => {
        const r = await example("chat.ts");
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /finish: (stop|length); tokens: \d+/);
      });
      await t.step("streaming.ts", async () => {
        const r = await example("streaming.ts");
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /\(\d+ tokens\)/);
        assert.match(r.stdout, /\(stopped after 10 chunks\)/);
      });
      await t.step("adapter.ts", async () => {
        await writeAdapter(`${server.adapterRoot}/ex-adapter`, modelShape(), 5);
        const r = await example("adapter.ts", "ex-adapter", "ex-adapter");
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /registered ex-adapter: r=4/);
        const lines = r.stdout.split("\n").filter((l) => l.startsWith(`${server.model}: `) || l.startsWith("ex-adapter: "));
        assert.equal(lines.length, 2, r.stdout);
        assert.match(r.stdout, /deleted ex-adapter/);
      });
      const doc = await (await fetch(`${new URL(server.baseURL).origin}/openapi.json`)).json();
      if ("/v1/fine_tuning/jobs" in doc.paths) {
        await t.step("fine_tune.ts", async () => {
          const r = await example("fine_tune.ts");
          assert.equal(r.code, 0, r.stdout + r.stderr);
          assert.match(r.stdout, /fine-tuned model: ft:/);
          assert.match(r.stdout, /answer: /);
        });
      }
    } finally {
      await server.close();
    }
  },
});
