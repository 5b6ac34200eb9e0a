// npm_test.ts — the npm package: `deno task sdk:build` compiles sdk/ to sdk/dist, `npm pack` +
// `npm install` put it in a fresh Node project, a .mjs script run by `node` uses it against a live
// server (models, chat, a stream, a typed error), and tsc type-checks a TypeScript consumer against
// the package's .d.ts (the stream overloads included).
import assert from "node:assert/strict";
import { KEYS, ROOT, startServer } from "./helpers.ts";

async function sh(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd ?? ROOT, env: opts.env, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Node 20+ and npm on PATH (the test is skipped, and says so, without them). */
const hasNode = await sh("node", ["--version"]).then((r) => r.code === 0 && Number(/^v(\d+)/.exec(r.stdout)?.[1]) >= 20, () => false) &&
  await sh("npm", ["--version"]).then((r) => r.code === 0, () => false);

const CONSUMER_MJS = `
import { QloraClient, NotFoundError, Stream } from "@qlora/sdk";
import DefaultClient from "@qlora/sdk";
const client = new QloraClient({ baseURL: process.env.QLORA_BASE_URL, apiKey: process.env.QLORA_API_KEY, maxRetries: 0 });
const out = { runtime: "node " + process.version, sameDefault: DefaultClient === QloraClient };
const models = await client.models.list();
const model = models.data.find((m) => !m.parent).id;
out.models = models.data.map((m) => m.id);
const chat = await client.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0 });
out.chatObject = chat.object;
out.chatText = chat.choices[0].message.content;
const stream = await client.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 4, temperature: 0, stream: true });
out.isStream = stream instanceof Stream;
let text = "";
for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
out.streamText = text;
const long = await client.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 400, ignore_eos: true, stream: true });
let n = 0;
for await (const _ of long) if (++n === 3) long.abort();
out.abortedAfter = n;
out.aborted = long.aborted;
try {
  await client.models.retrieve("missing-model");
} catch (e) {
  out.error = { notFound: e instanceof NotFoundError, status: e.status, requestId: e.requestId };
}
console.log(JSON.stringify(out));
`;

const CONSUMER_TS = `
import { QloraClient, type ChatCompletion, type ChatCompletionChunk, Stream, APIError } from "@qlora/sdk";
const client = new QloraClient({ baseURL: "http://127.0.0.1:1/v1" });
export async function f(): Promise<void> {
  const done: ChatCompletion = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] });
  const stream: Stream<ChatCompletionChunk> = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], stream: true });
  for await (const c of stream) c.choices[0]?.delta.content?.toUpperCase();
  // @ts-expect-error a stream is not a completion
  const wrong: ChatCompletion = await client.chat.completions.create({ model: "m", messages: [], stream: true });
  for await (const job of client.fineTuning.jobs.list({ limit: 2 })) job.status satisfies string;
  const e: unknown = null;
  if (e instanceof APIError) e.requestId satisfies string | null;
  void done; void wrong;
}
`;

Deno.test({
  name: "the built npm package installs into a Node project and works from node",
  ignore: !hasNode,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const build = await sh(Deno.execPath(), ["task", "sdk:build"]);
    assert.equal(build.code, 0, build.stdout + build.stderr);
    const pkg = JSON.parse(await Deno.readTextFile(`${ROOT}sdk/dist/package.json`));
    assert.equal(pkg.name, "@qlora/sdk");
    assert.equal(pkg.type, "module");
    for (const f of ["mod.js", "mod.d.ts", "streaming.js", "generated/api.d.ts", "openapi.json"]) await Deno.stat(`${ROOT}sdk/dist/${f}`);

    const proj = await Deno.makeTempDir({ prefix: "qlora-sdk-node-" });
    const server = await startServer();
    try {
      await Deno.writeTextFile(`${proj}/package.json`, JSON.stringify({ name: "consumer", private: true, type: "module" }));
      const npmEnv = {
        npm_config_cache: `${proj}/.npm-cache`,
        npm_config_update_notifier: "false",
        npm_config_fund: "false",
        npm_config_audit: "false",
      };
      const packed = await sh("npm", ["pack", `${ROOT}sdk/dist`, "--pack-destination", proj, "--json"], { cwd: proj, env: npmEnv });
      assert.equal(packed.code, 0, packed.stderr);
      const tarball = JSON.parse(packed.stdout)[0].filename as string;
      const inst = await sh("npm", ["install", "--offline", "--no-audit", "--no-fund", `./${tarball.split("/").pop()}`], {
        cwd: proj,
        env: npmEnv,
      });
      assert.equal(inst.code, 0, inst.stdout + inst.stderr);

      await t.step("node runs an .mjs that imports the installed package", async () => {
        await Deno.writeTextFile(`${proj}/use.mjs`, CONSUMER_MJS);
        const r = await sh("node", ["use.mjs"], { cwd: proj, env: { QLORA_BASE_URL: server.baseURL, QLORA_API_KEY: KEYS.acme } });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
        assert.equal(out.sameDefault, true);
        assert.ok(out.models.includes(server.model));
        assert.equal(out.chatObject, "chat.completion");
        assert.equal(out.isStream, true);
        assert.equal(out.streamText, out.chatText, "streamed text equals the greedy answer");
        assert.equal(out.aborted, true);
        assert.ok(out.abortedAfter >= 3 && out.abortedAfter < 100, `aborted after ${out.abortedAfter} chunks`);
        assert.equal(out.error.notFound, true);
        assert.equal(out.error.status, 404);
        assert.match(out.error.requestId, /.+/);
      });

      await t.step("tsc type-checks a TypeScript consumer against the package's declarations", async () => {
        await Deno.writeTextFile(`${proj}/consumer.ts`, CONSUMER_TS);
        const check = `
          import ts from "npm:typescript@5.9.3";
          const program = ts.createProgram(["${proj}/consumer.ts"], {
            target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
            lib: ["lib.es2022.d.ts", "lib.dom.d.ts", "lib.dom.asynciterable.d.ts"], types: [], strict: true, noEmit: true, skipLibCheck: false,
          });
          const d = ts.getPreEmitDiagnostics(program);
          console.log(ts.formatDiagnostics(d, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => "${proj}", getNewLine: () => "\\n" }));
          Deno.exit(d.length ? 1 : 0);
        `;
        await Deno.writeTextFile(`${proj}/check.ts`, check);
        const r = await sh(Deno.execPath(), ["run", "--config", `${ROOT}deno.json`, "--allow-read", "--allow-env", `${proj}/check.ts`]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
      });
    } finally {
      await server.close();
      await Deno.remove(proj, { recursive: true }).catch(() => {});
    }
  },
});
