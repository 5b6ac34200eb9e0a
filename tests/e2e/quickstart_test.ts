// quickstart_test.ts — the README's quick start on a fresh clone with nothing beside it: `git clone`
// of this checkout's committed HEAD into an empty temp folder (no ../shared, no native/build), then
// `deno task start`, which must build the native library itself and serve the built-in
// stories260K so that a chat completion answers in English; every start error is one line on
// stderr with exit code 2; and the test task's build step is a no-op when up to date and sees a
// touched source as stale (checked with its staleness function, not a rebuild).
//
// The test passes `--port` and `--data` (a free port, a temp data folder) to `deno task start` and
// nothing else. `deno task start` builds only the library it serves with (the CPU one here), so
// the first start compiles about 20 C++ files: allow minutes.
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const START_TIMEOUT_MS = 8 * 60_000;

async function sh(cmd: string, args: string[], cwd?: string) {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped", env: { NO_COLOR: "1" } }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** stderr of `deno task start` without the task runner's own "Task start …" header. */
const programLines = (stderr: string) => stderr.split("\n").filter((l) => l.trim() !== "" && !/^Task start /.test(l));

function freePort(): number {
  const l = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("README quick start is apt-get, npm install deno, deno task start, deno task test", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const section = readme.split(/^## Quick start$/m)[1].split(/^## /m)[0];
  const commands = section.split("\n").filter((l) => l.startsWith("    ")).map((l) => l.trim());
  assert.deepEqual(commands, [
    "apt-get install -y g++ make libdnnl-dev chromium",
    "npm install -g deno@2",
    "deno task start",
    "deno task test",
  ]);
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).tasks as Record<string, string>;
  assert.match(tasks.test, /scripts\/prepare\.ts && deno test /, "deno task test builds what it needs first");
});

// A copy without git history (e.g. a source archive) cannot be cloned: the test is skipped there.
const isGitCheckout = (() => {
  try {
    Deno.statSync(`${ROOT}/.git`);
    return true;
  } catch {
    return false;
  }
})();

Deno.test({
  ignore: !isGitCheckout,
  name: "fresh clone, nothing beside it: start errors are one line + exit 2; deno task start builds, serves stories260K, answers English",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const t0 = performance.now();
    const tmp = await Deno.makeTempDir({ prefix: "qlora-quickstart-" });
    const clone = `${tmp}/clone`;
    let server: Deno.ChildProcess | null = null;
    try {
      const c = await sh("git", ["clone", "-q", ROOT, clone]);
      assert.equal(c.code, 0, c.stderr);
      assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), ["clone"], "nothing beside the clone");
      assert.throws(() => Deno.statSync(`${clone}/native/build`), "the clone has no native build");

      // --- start errors: one line on stderr, exit code 2 (all are found before the native build)
      const start = (...args: string[]) => sh("deno", ["task", "start", ...args], clone);
      const expectError = async (args: string[], pattern: RegExp) => {
        const r = await start(...args);
        const lines = programLines(r.stderr);
        assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
        assert.equal(lines.length, 1, `${args.join(" ")}: stderr must be one line:\n${r.stderr}`);
        assert.match(lines[0], pattern);
        assert.doesNotMatch(r.stderr + r.stdout, /^\s+at /m, "no stack trace");
        return r;
      };
      const data = `${tmp}/data`;
      await expectError(["--data", data, "--model", `${tmp}/no-such-model`], /model folder .*no-such-model not found/);
      await Deno.mkdir(`${tmp}/bad-model`);
      await Deno.writeTextFile(`${tmp}/bad-model/config.json`, "{ not json");
      await expectError(["--data", data, "--model", `${tmp}/bad-model`], /config\.json is not a model config/);
      await Deno.writeTextFile(`${tmp}/keys.json`, "{ not json");
      await expectError(["--data", data, "--api-keys", `${tmp}/keys.json`], /bad API keys file/);
      await Deno.writeTextFile(`${tmp}/a-file`, "");
      await expectError(["--data", `${tmp}/a-file/data`], /cannot write the data folder/);
      const held = Deno.listen({ port: 0, hostname: "127.0.0.1" });
      try {
        await expectError(["--data", data, "--port", String((held.addr as Deno.NetAddr).port)], /port \d+ is in use/);
      } finally {
        held.close();
      }
      await expectError(["--data", data, "--port", "eighty"], /--port must be a non-negative integer/);
      const unknown = await expectError(["--data", data, "--no-such-flag"], /unknown flag '--no-such-flag'/);
      for (const flag of ["--model DIR", "--port N", "--data DIR", "--quant", "--activations f32|bf16"]) {
        assert.ok(unknown.stdout.includes(flag), flag);
      }
      assert.match(unknown.stdout, /default: 8000/);
      const help = await start("--help");
      assert.equal(help.code, 0);
      assert.match(help.stdout, /--api-keys FILE/);
      assert.throws(() => Deno.statSync(`${clone}/native/build/libqlora_cpu.so`), "errors come before any build");

      // --- the real start: builds the native library, then serves the default model
      const port = freePort();
      server = new Deno.Command("deno", {
        args: ["task", "start", "--port", String(port), "--data", data],
        cwd: clone,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).spawn();
      let log = "";
      const collect = async (s: ReadableStream<Uint8Array>) => {
        for await (const chunk of s.pipeThrough(new TextDecoderStream())) log += chunk;
      };
      const pumps = [collect(server.stdout), collect(server.stderr)];
      const exited = server.status.then((s) => s);
      const deadline = Date.now() + START_TIMEOUT_MS;
      let up = false;
      while (!up && Date.now() < deadline) {
        const done = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 1000))]);
        if (done) break;
        up = await fetch(`http://127.0.0.1:${port}/health`).then((r) => (r.body?.cancel(), r.ok)).catch(() => false);
      }
      assert.ok(up, `the server did not come up:\n${log}`);
      const startSeconds = (performance.now() - t0) / 1000;
      assert.match(log, /native: libqlora_cpu\.so built in [\d.]+ s/, "one line for the library it built");
      assert.match(log, /listening on http:\/\/127\.0\.0\.1:\d+: serving stories260K/);
      assert.match(log, /--model DIR/, "the start line says how to serve another model");

      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "stories260K",
          messages: [{ role: "user", content: "Once upon a time" }],
          max_tokens: 48,
          temperature: 0,
        }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      const text: string = (await res.json()).choices[0].message.content;
      const common = new Set([
        "the",
        "a",
        "was",
        "and",
        "to",
        "she",
        "he",
        "they",
        "her",
        "his",
        "little",
        "there",
        "named",
        "day",
        "with",
      ]);
      const words = new Set(text.toLowerCase().match(/[a-z]+/g) ?? []);
      const english = [...words].filter((w) => common.has(w));
      assert.ok(english.length >= 3, `expected English story words in ${JSON.stringify(text)}`);

      // --- the test task's build step: up to date now (no-op), stale once a source is touched
      const build = await import(`file://${clone}/server/ffi/build.ts`) as typeof import("../../server/ffi/build.ts");
      const buildDir = `${clone}/native/build`, nativeDir = `${clone}/native`;
      assert.deepEqual(build.staleLibraries(["cpu"], buildDir, nativeDir), [], "up to date after the start's build");
      const future = new Date(Date.now() + 60_000);
      Deno.utimeSync(`${nativeDir}/src/cpu/norm.cpp`, future, future);
      assert.deepEqual(build.staleLibraries(["cpu"], buildDir, nativeDir), ["cpu"], "a touched source makes the library stale");
      assert.deepEqual(build.staleLibraries(["cudaemu"], buildDir, nativeDir), ["cudaemu"], "a library never built is stale");
      console.log(
        `quick start: server up ${startSeconds.toFixed(0)} s after the clone (native build included); answer: ${JSON.stringify(text)}`,
      );

      server.kill("SIGTERM");
      await exited;
      await Promise.all(pumps);
      server = null;
    } finally {
      if (server) {
        try {
          server.kill("SIGKILL");
        } catch { /* gone */ }
        await server.status;
      }
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
