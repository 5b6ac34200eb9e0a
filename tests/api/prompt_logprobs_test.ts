// prompt_logprobs_test.ts — prompt logprobs over the API on stories260K: completions' echo with
// logprobs (OpenAI: the prompt's tokens first, the first logprob and top logprobs null, offsets in
// the echoed text), streamed (the echo chunk carries them) or not, and vLLM's prompt_logprobs on
// completions and chat. The values are checked against the logprobs the server gives the same
// tokens when it generates them greedily: prompt + greedy continuation, scored as a prompt.
import assert from "node:assert/strict";
import type { Server } from "../../server/server.ts";
import { json, sseData, storiesServer } from "../helpers.ts";

const MODEL = "stories260K";
const TEMPLATE = Deno.readTextFileSync(new URL("../../models/stories260K/chat_template.jinja", import.meta.url));

async function withServer(fn: (s: Server) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "qlora-prompt-logprobs-" });
  const s = await storiesServer(root, { chatTemplate: TEMPLATE });
  try {
    await fn(s);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

// deno-lint-ignore no-explicit-any
type J = any;
async function ok(res: Response): Promise<J> {
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}
const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-4, `${what}: ${a} vs ${b}`);

Deno.test("completions echo + logprobs: the prompt's tokens come first (first null) and score as the same tokens generated", async () => {
  await withServer(async (s) => {
    const prompt = "Once upon a time";
    const N = 10;
    const gen = await ok(
      await s.app.request("/v1/completions", json({ model: MODEL, prompt, max_tokens: N, temperature: 0, logprobs: 2, ignore_eos: true })),
    );
    const g = gen.choices[0];
    const full = prompt + g.text;
    const scored = await ok(
      await s.app.request("/v1/completions", json({ model: MODEL, prompt: full, max_tokens: 1, echo: true, logprobs: 2, temperature: 0 })),
    );
    const lp = scored.choices[0].logprobs;
    const P = scored.usage.prompt_tokens;
    assert.equal(scored.choices[0].text.startsWith(full), true);
    assert.equal(lp.tokens.length, P + 1);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.top_logprobs[0], null);
    assert.equal(lp.text_offset[0], 0);
    // the echoed prompt's last N tokens are the generated ones, with the logprobs they had when generated
    const tail = P - N;
    assert.deepEqual(lp.tokens.slice(tail, P), g.logprobs.tokens);
    for (let i = 0; i < N; i++) {
      close(lp.token_logprobs[tail + i], g.logprobs.token_logprobs[i], `token ${i}`);
      assert.deepEqual(Object.keys(lp.top_logprobs[tail + i]), Object.keys(g.logprobs.top_logprobs[i]));
    }
    // offsets are non-decreasing and the generated token comes right after the echo
    for (let i = 1; i < lp.text_offset.length; i++) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
    assert.equal(lp.text_offset[P], full.length);
    for (const x of lp.token_logprobs.slice(1)) assert.ok(typeof x === "number" && x <= 0);

    // streamed: the echo chunk carries the prompt's logprobs, then one entry per token
    const res = await s.app.request(
      "/v1/completions",
      json({ model: MODEL, prompt: full, max_tokens: 2, echo: true, logprobs: 2, temperature: 0, stream: true }),
    );
    const chunks = sseData(await res.text()).slice(0, -1).map((d) => JSON.parse(d));
    const first = chunks[0].choices[0];
    assert.equal(first.text, scored.choices[0].text.slice(0, first.text.length));
    assert.deepEqual(first.logprobs.token_logprobs, lp.token_logprobs.slice(0, P));
    assert.deepEqual(first.logprobs.tokens, lp.tokens.slice(0, P));
  });
});

Deno.test("vLLM's prompt_logprobs on completions and chat: {token id: {logprob, rank, decoded_token}}, first null; not with stream", async () => {
  await withServer(async (s) => {
    const prompt = "Lily had a red ball";
    const gen = await ok(
      await s.app.request("/v1/completions", json({ model: MODEL, prompt, max_tokens: 6, temperature: 0, logprobs: 0, ignore_eos: true })),
    );
    const r = await ok(
      await s.app.request(
        "/v1/completions",
        json({ model: MODEL, prompt: prompt + gen.choices[0].text, max_tokens: 1, prompt_logprobs: 3, n: 2 }),
      ),
    );
    const P = r.usage.prompt_tokens; // one prompt, counted once for its n choices
    for (const choice of r.choices) {
      const pl = choice.prompt_logprobs;
      assert.equal(pl.length, P);
      assert.equal(pl[0], null);
      for (const entry of pl.slice(1)) {
        const values = Object.values(entry) as { logprob: number; rank: number; decoded_token: string }[];
        assert.ok(values.length >= 3 && values.length <= 4, JSON.stringify(entry));
        assert.ok(values.some((v) => v.rank === 1));
        for (const v of values) assert.ok(v.logprob <= 0 && v.rank >= 1 && typeof v.decoded_token === "string");
      }
      // the generated tokens have rank 1 (greedy) and the logprob they had when generated
      pl.slice(P - 6).forEach((entry: J, i: number) => {
        const best = Object.values(entry).find((v: J) => v.rank === 1) as J;
        assert.equal(best.decoded_token, gen.choices[0].logprobs.tokens[i]);
        close(best.logprob, gen.choices[0].logprobs.token_logprobs[i], `token ${i}`);
      });
    }
    assert.deepEqual(r.choices[0].prompt_logprobs, r.choices[1].prompt_logprobs);

    const messages = [{ role: "user", content: prompt }];
    const c = await ok(await s.app.request("/v1/chat/completions", json({ model: MODEL, messages, max_tokens: 1, prompt_logprobs: 0 })));
    assert.equal(c.prompt_logprobs.length, c.usage.prompt_tokens);
    assert.equal(c.prompt_logprobs[0], null);
    const plain = await ok(await s.app.request("/v1/chat/completions", json({ model: MODEL, messages, max_tokens: 1 })));
    assert.equal("prompt_logprobs" in plain, false);

    for (const [path, input] of [["/v1/completions", { prompt }], ["/v1/chat/completions", { messages }]] as const) {
      const res = await s.app.request(path, json({ model: MODEL, ...input, max_tokens: 1, prompt_logprobs: 1, stream: true }));
      const e = (await res.json()).error;
      assert.equal(res.status, 400);
      assert.deepEqual([e.param, e.code], ["prompt_logprobs", "unsupported_value"]);
    }
  });
});
