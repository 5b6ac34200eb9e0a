// shutdown_test.ts — SIGTERM with a drain deadline (`deno task start --drain-timeout N`): the
// server stops taking connections, lets running requests finish for N seconds, then ends the
// streams still running with an error event and exits 0 — it never waits on a stream forever.
import assert from "node:assert/strict";
import { makeModel } from "../../server/model/make_model.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

Deno.test({
  name: "SIGTERM: a stream still running at the drain deadline ends with an error event; the process exits 0 soon after",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "qlora-shutdown-" });
    // a model slow enough (135M shape, one thread) that a 1,500-token stream outlives the deadline
    await makeModel({ shape: "smollm-135m", out: `${tmp}/model` });
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}server/main.ts`,
        "--model",
        `${tmp}/model`,
        "--port",
        "0",
        "--data",
        `${tmp}/data`,
        "--threads",
        "1",
        "--drain-timeout",
        "1",
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let log = "";
    try {
      let port = 0;
      while (!port) {
        const { value, done } = await lines.read();
        if (done) throw new Error(`the server exited before listening:\n${log}`);
        log += value;
        const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
        if (m) port = Number(m[1]);
      }
      const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "model", prompt: "Once", max_tokens: 1500, ignore_eos: true, stream: true, temperature: 0 }),
      });
      assert.equal(res.status, 200);
      const body = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let sse = (await body.read()).value ?? ""; // the stream has started
      const t0 = performance.now();
      child.kill("SIGTERM");
      while (true) {
        const { value, done } = await body.read();
        if (done) break;
        sse += value;
      }
      const ended = (performance.now() - t0) / 1000;
      const events = sse.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
      assert.ok(events.length > 1, "tokens streamed before the signal");
      const last = events.filter((e) => e !== "[DONE]").at(-1)!;
      assert.ok(JSON.parse(last).error, `the stream ends with an error event: ${last}`);
      assert.ok(ended >= 0.9 && ended < 10, `ended ${ended.toFixed(1)} s after SIGTERM (deadline 1 s)`);
      const status = await child.status;
      assert.equal(status.code, 0);
      assert.ok((performance.now() - t0) / 1000 < 15, "the process exited soon after the deadline");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await lines.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
