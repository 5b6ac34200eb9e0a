// prompt_logprobs_test.ts — the prompt's logprobs (computed only for requests that ask): each prompt
// token's logprob equals the logprob the same token gets when the engine generates it greedily
// (the same context, one row of logits), its rank and top alternatives agree, the first is null;
// with a prefix-cache hit the whole prompt is still scored (and the cached KV is not rewritten);
// a prompt longer than one logits slice (256 rows) is scored in slices.
import assert from "node:assert/strict";
import { Engine, type GenerateEvent } from "../../server/engine/engine.ts";
import { openModel } from "../../server/model/bundle.ts";
import { openContext } from "../native/backends.ts";
import { REFERENCE, STORIES } from "../helpers.ts";

async function withEngine(fn: (engine: Engine) => Promise<void>): Promise<void> {
  const ctx = openContext("cpu", 1);
  const bundle = await openModel(ctx, STORIES, { quant: "none" });
  const engine = new Engine(bundle.loaded.model, bundle.tokenizer, { maxModelLen: bundle.maxModelLen, maxNumSeqs: 8 });
  try {
    await fn(engine);
  } finally {
    await engine.stop();
    engine.dispose();
    bundle.loaded.model.dispose();
    ctx.dispose();
  }
}

async function collect(it: AsyncIterable<GenerateEvent>) {
  const tokens: Extract<GenerateEvent, { type: "token" }>[] = [];
  for await (const e of it) if (e.type === "token") tokens.push(e);
  return tokens;
}

Deno.test("prompt logprobs equal the greedy generation's logprobs of the same tokens; first null; ranks and top alternatives", async () => {
  await withEngine(async (engine) => {
    const c = REFERENCE.cases[0];
    const n = 12;
    // generate greedily with logprobs
    const gen = await collect(
      engine.generate({ promptIds: c.prompt_ids, sampling: { temperature: 0, logprobs: 3 }, stopping: { maxTokens: n, ignoreEos: true } }),
    );
    assert.equal(gen.length, n);
    assert.equal(gen[0].promptLogprobs, undefined, "not asked: none");
    const full = [...c.prompt_ids, ...gen.map((t) => t.tokenId)];
    // score prompt + generation as a prompt
    const scored = await collect(engine.generate({ promptIds: full, promptLogprobs: 3, stopping: { maxTokens: 1 } }));
    const pl = scored[0].promptLogprobs!;
    assert.equal(pl.length, full.length);
    assert.equal(pl[0], null);
    for (let i = 0; i < n; i++) {
      const e = pl[c.prompt_ids.length + i]!;
      assert.equal(e.token, gen[i].tokenId);
      assert.ok(Math.abs(e.logprob - gen[i].logprob!) < 1e-4, `token ${i}: ${e.logprob} vs ${gen[i].logprob}`);
      assert.equal(e.rank, 1, "a greedy token is the most likely");
      assert.deepEqual(e.topLogprobs.map((t) => t.token), gen[i].topLogprobs!.map((t) => t.token));
      e.topLogprobs.forEach((t, k) => assert.ok(Math.abs(t.logprob - gen[i].topLogprobs![k].logprob) < 1e-4));
    }
    for (const e of pl.slice(1)) {
      assert.ok(e && e.logprob <= 0 && e.rank >= 1 && e.topLogprobs.length === 3);
      assert.ok(e.rank > 1 || e.topLogprobs[0].token === e.token);
      assert.ok(e.logprob <= e.topLogprobs[0].logprob + 1e-6);
    }
    // again: the prompt's prefix is now in the prefix cache, and it is still scored whole and the same
    const seen: { start: number; end: number; cached: number }[] = [];
    const run = engine.runner.run.bind(engine.runner);
    engine.runner.run = (chunks) => {
      for (const c of chunks) if (c.seq.wantsPromptLogits) seen.push({ start: c.start, end: c.end, cached: c.seq.numCachedTokens });
      return run(chunks);
    };
    const again = await collect(engine.generate({ promptIds: full, promptLogprobs: 3, stopping: { maxTokens: 1 } }));
    assert.equal(seen.length, 1);
    assert.ok(seen[0].cached >= 16, `a prefix-cache hit (${seen[0].cached} tokens)`);
    assert.deepEqual([seen[0].start, seen[0].end], [0, full.length], "computed whole");
    assert.deepEqual(again[0].promptLogprobs!.map((e) => e?.logprob ?? null), pl.map((e) => e?.logprob ?? null));
    // and a request that does not ask still reuses the cache and generates what it did
    const plain = await collect(
      engine.generate({ promptIds: c.prompt_ids, sampling: { temperature: 0 }, stopping: { maxTokens: n, ignoreEos: true } }),
    );
    assert.deepEqual(plain.map((t) => t.tokenId), gen.map((t) => t.tokenId));
  });
});

Deno.test("prompt logprobs of a prompt longer than a logits slice (300 tokens, in a batch with others)", async () => {
  await withEngine(async (engine) => {
    const c = REFERENCE.cases[1];
    const gen = await collect(
      engine.generate({
        promptIds: c.prompt_ids,
        sampling: { temperature: 0, logprobs: 0 },
        stopping: { maxTokens: 300, ignoreEos: true },
      }),
    );
    const full = [...c.prompt_ids, ...gen.map((t) => t.tokenId)];
    const [scored, other] = await Promise.all([
      collect(engine.generate({ promptIds: full, promptLogprobs: 0, stopping: { maxTokens: 1 } })),
      collect(
        engine.generate({
          promptIds: REFERENCE.cases[0].prompt_ids,
          sampling: { temperature: 0 },
          stopping: { maxTokens: 8, ignoreEos: true },
        }),
      ),
    ]);
    assert.deepEqual(other.map((t) => t.tokenId), REFERENCE.cases[0].generated_ids.slice(0, 8));
    const pl = scored[0].promptLogprobs!;
    assert.equal(pl.length, full.length);
    let worst = 0;
    gen.forEach((g, i) => worst = Math.max(worst, Math.abs(pl[c.prompt_ids.length + i]!.logprob - g.logprob!)));
    assert.ok(worst < 1e-3, `worst ${worst}`);
  });
});
