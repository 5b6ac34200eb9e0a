// engine_test.ts — the generation engine end to end on stories260K: llama2.c's greedy outputs
// through the scheduler, streamed pieces that concatenate to decode(ids), concurrent requests
// equal to requests alone (also under KV-cache preemption), seeds, stop strings, cancellation.
import assert from "node:assert/strict";
import { openContext } from "../native/backends.ts";
import { type ModelBundle, openModel } from "../../server/model/bundle.ts";
import { Engine, type GenerateEvent, type GenerateRequest } from "../../server/engine/engine.ts";
import type { Context } from "../../server/ffi/tensor.ts";
import { STORIES } from "../helpers.ts";

const REFERENCE = JSON.parse(Deno.readTextFileSync(`${STORIES}/reference_greedy.json`)) as {
  cases: { prompt: string; prompt_ids: number[]; generated_ids: number[]; full_text: string }[];
};

interface Result {
  ids: number[];
  text: string;
  finish: Extract<GenerateEvent, { type: "finish" }>;
}

async function collect(it: AsyncIterable<GenerateEvent>): Promise<Result> {
  const ids: number[] = [];
  let text = "";
  for await (const e of it) {
    text += e.text;
    if (e.type === "token") ids.push(e.tokenId);
    else return { ids, text, finish: e };
  }
  throw new Error("stream ended without a finish event");
}

async function withEngine(
  opts: Partial<ConstructorParameters<typeof Engine>[2]>,
  fn: (e: Engine, b: ModelBundle, ctx: Context) => void | Promise<void>,
  quant: "none" | "nf4" = "none",
) {
  const ctx = openContext("cpu", 1);
  const bundle = await openModel(ctx, STORIES, { quant });
  const engine = new Engine(bundle.loaded.model, bundle.tokenizer, { maxModelLen: bundle.maxModelLen, ...opts });
  try {
    await fn(engine, bundle, ctx);
  } finally {
    await engine.stop();
    engine.dispose();
    bundle.loaded.model.dispose();
    ctx.dispose();
  }
}

const greedy = (c: (typeof REFERENCE.cases)[number]): GenerateRequest => ({
  promptIds: c.prompt_ids,
  sampling: { temperature: 0 },
  stopping: { maxTokens: c.generated_ids.length, ignoreEos: true },
});

Deno.test("greedy generation through the engine reproduces llama2.c; pieces concatenate to the decoded text", async () => {
  await withEngine({ maxNumSeqs: 1 }, async (engine, bundle) => {
    for (const c of REFERENCE.cases) {
      const r = await collect(engine.generate(greedy(c)));
      assert.deepEqual(r.ids, c.generated_ids);
      assert.equal(r.finish.finishReason, "length");
      assert.equal(r.finish.completionTokens, c.generated_ids.length);
      assert.equal(bundle.tokenizer.decode(c.prompt_ids, { skipSpecialTokens: true }) + r.text, c.full_text);
    }
  });
});

Deno.test("concurrent requests in one batch each get exactly what they get alone, also when the KV cache forces preemption", async () => {
  for (const numBlocks of [64, 6]) {
    await withEngine({ maxNumSeqs: 8, numBlocks, blockSize: 16 }, async (engine) => {
      const results = await Promise.all(REFERENCE.cases.map((c) => collect(engine.generate(greedy(c)))));
      results.forEach((r, i) => assert.deepEqual(r.ids, REFERENCE.cases[i].generated_ids, `case ${i}, ${numBlocks} blocks`));
      if (numBlocks === 6) assert.ok(engine.scheduler.preemptions > 0, "the small cache should have forced a preemption");
      else assert.equal(engine.scheduler.preemptions, 0);
    });
  }
});

Deno.test("sampling with a seed is reproducible; different seeds differ", async () => {
  await withEngine({}, async (engine) => {
    const req = (seed: number): GenerateRequest => ({
      promptIds: REFERENCE.cases[0].prompt_ids,
      sampling: { temperature: 1, topP: 0.95, seed },
      stopping: { maxTokens: 40, ignoreEos: true },
    });
    const [a, b, c] = await Promise.all([
      collect(engine.generate(req(7))),
      collect(engine.generate(req(7))),
      collect(engine.generate(req(8))),
    ]);
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
  });
});

Deno.test("stop strings end generation without emitting the stop text; stop token ids too", async () => {
  await withEngine({}, async (engine) => {
    const c = REFERENCE.cases[1]; // "... They liked to play ..."
    const r = await collect(engine.generate({ ...greedy(c), stopping: { maxTokens: 59, stop: ["liked"] } }));
    assert.equal(r.finish.finishReason, "stop");
    assert.equal(r.finish.stopReason, "liked");
    assert.equal(r.text, " were playing in the park. They ");
    const stopId = c.generated_ids[5];
    const r2 = await collect(engine.generate({ ...greedy(c), stopping: { maxTokens: 59, stopTokenIds: [stopId] } }));
    assert.equal(r2.finish.finishReason, "stop");
    assert.equal(r2.ids.at(-1), stopId);
    assert.equal(r2.ids.length, c.generated_ids.indexOf(stopId) + 1);
  });
});

Deno.test("an aborted request finishes with 'abort' and frees its blocks; others continue", async () => {
  await withEngine({}, async (engine) => {
    const controller = new AbortController();
    const long = engine.generate({
      promptIds: [1, 274],
      sampling: { temperature: 0 },
      stopping: { maxTokens: 400, ignoreEos: true },
      signal: controller.signal,
    });
    const other = collect(engine.generate(greedy(REFERENCE.cases[0])));
    let n = 0;
    let finish: GenerateEvent | null = null;
    for await (const e of long) {
      if (e.type === "token" && ++n === 5) controller.abort();
      if (e.type === "finish") finish = e;
    }
    assert.ok(finish && finish.type === "finish" && finish.finishReason === "abort");
    assert.ok(n < 400);
    assert.deepEqual((await other).ids, REFERENCE.cases[0].generated_ids);
    assert.equal(engine.blocks.numUsedBlocks, 0);
  });
});

Deno.test("a request whose computation fails is failed alone: the others in its batch get the tokens they get alone", async () => {
  await withEngine({}, async (engine) => {
    // a fault injected where the runner computes: any batch holding the poisoned sequence throws
    // (as a native op's error on one request's data or adapter would)
    const POISON = 511;
    const run = engine.runner.run.bind(engine.runner);
    engine.runner.run = (chunks) => {
      if (chunks.some((c) => c.seq.promptIds.includes(POISON))) throw new Error("injected fault");
      return run(chunks);
    };
    // the others first (the first one starts the step loop), then the poisoned one joins their batch
    const others = REFERENCE.cases.slice(0, 2).map((c) => collect(engine.generate(greedy(c))));
    let batchedWithOthers = false;
    engine.runner.run = ((inner) => (chunks: Parameters<typeof inner>[0]) => {
      if (chunks.length > 1 && chunks.some((c) => c.seq.promptIds.includes(POISON))) batchedWithOthers = true;
      return inner(chunks);
    })(engine.runner.run);
    const poisoned = collect(engine.generate({ promptIds: [1, POISON], sampling: { temperature: 0 }, stopping: { maxTokens: 8 } }));
    const bad = await poisoned;
    assert.equal(bad.finish.finishReason, "abort");
    assert.match(String(bad.finish.stopReason), /injected fault/);
    for (const [i, o] of (await Promise.all(others)).entries()) {
      assert.deepEqual(o.ids, REFERENCE.cases[i].generated_ids, `request ${i} is what it is alone`);
      assert.equal(o.finish.finishReason, "length");
    }
    assert.ok(batchedWithOthers, "the poisoned request shared a batch with the others");
    assert.equal(engine.blocks.numUsedBlocks, 0);
  });
});

Deno.test("prompts beyond the context are refused before they are queued", async () => {
  await withEngine({}, (engine, bundle) => {
    assert.throws(() => engine.generate({ promptIds: new Array(bundle.maxModelLen).fill(5) }), /context is 512/);
    assert.throws(() => engine.generate({ promptIds: [1, 99999] }), /outside the vocabulary/);
  });
});

Deno.test("scheduler: waiting requests are admitted fairly across tenants (fewest running first), arrival order within one", async () => {
  const { Scheduler } = await import("../../server/engine/scheduler.ts");
  const { BlockManager } = await import("../../server/engine/kv_blocks.ts");
  const { Sequence } = await import("../../server/engine/sequence.ts");
  const sched = new Scheduler(new BlockManager(64, 16), { maxNumSeqs: 3, maxBatchedTokens: 4096, maxModelLen: 256 });
  const seq = (tenant: string, n: number) => new Sequence({ promptIds: [1, 2, 3], tenant, id: n });
  // tenant a queued five requests before tenant b's one and c's one
  const all = [seq("a", 1), seq("a", 2), seq("a", 3), seq("a", 4), seq("a", 5), seq("b", 6), seq("c", 7)];
  for (const s of all) sched.add(s);
  const admitted = sched.schedule().map((c) => c.seq.id);
  assert.deepEqual(admitted, [1, 6, 7], "one of a's, then b's and c's before a's second");
  // as they finish, a's queue drains in arrival order
  for (const s of [...sched.running]) sched.remove(s);
  assert.deepEqual(sched.schedule().map((c) => c.seq.id), [2, 3, 4]);
});

Deno.test("scheduler: a tenant's weight is its share of the batch when tenants compete", async () => {
  const { Scheduler } = await import("../../server/engine/scheduler.ts");
  const { BlockManager } = await import("../../server/engine/kv_blocks.ts");
  const { Sequence } = await import("../../server/engine/sequence.ts");
  const sched = new Scheduler(new BlockManager(64, 16), { maxNumSeqs: 6, maxBatchedTokens: 4096, maxModelLen: 256 });
  let id = 0;
  const seq = (tenant: string, tenantWeight: number) => new Sequence({ promptIds: [1, 2, 3], tenant, tenantWeight, id: ++id });
  // both queue many; heavy has weight 2, light weight 1: of 6 slots heavy gets 4, light 2
  for (let i = 0; i < 8; i++) sched.add(seq("light", 1));
  for (let i = 0; i < 8; i++) sched.add(seq("heavy", 2));
  const admitted = sched.schedule().map((c) => c.seq.tenant);
  assert.equal(admitted.filter((t) => t === "heavy").length, 4, admitted.join(","));
  assert.equal(admitted.filter((t) => t === "light").length, 2, admitted.join(","));
});

Deno.test("scheduler: a tenant whose requests fill the batch gives a slot up to a waiting tenant (fair-share preemption)", async () => {
  const { Scheduler } = await import("../../server/engine/scheduler.ts");
  const { BlockManager } = await import("../../server/engine/kv_blocks.ts");
  const { Sequence } = await import("../../server/engine/sequence.ts");
  const sched = new Scheduler(new BlockManager(64, 16), { maxNumSeqs: 4, maxBatchedTokens: 4096, maxModelLen: 256 });
  let id = 0;
  const seq = (tenant: string) => new Sequence({ promptIds: [1, 2, 3], tenant, id: ++id });
  for (let i = 0; i < 6; i++) sched.add(seq("a"));
  assert.deepEqual(sched.schedule().map((c) => c.seq.tenant), ["a", "a", "a", "a"]);
  for (const s of sched.running) s.numComputedTokens = s.length;
  // b arrives while a holds every slot: the next step runs b in place of a's newest sequence
  const b1 = seq("b"), b2 = seq("b");
  sched.add(b1);
  sched.add(b2);
  const step = sched.schedule();
  assert.ok(step.some((c) => c.seq === b1), "b's first request runs at once");
  assert.equal(sched.running.filter((s) => s.tenant === "a").length, 3);
  assert.equal(sched.preemptions, 1);
  for (const s of sched.running) s.numComputedTokens = s.length;
  // b2 next: a gives up one more (2 and 2 is fair); then no more swaps
  sched.schedule();
  for (const s of sched.running) s.numComputedTokens = s.length;
  assert.deepEqual(sched.running.map((s) => s.tenant).sort(), ["a", "a", "b", "b"]);
  sched.schedule();
  assert.equal(sched.preemptions, 2, "2 and 2: no further swap");
  // with one tenant alone nothing is ever preempted for fairness
  const solo = new Scheduler(new BlockManager(64, 16), { maxNumSeqs: 2, maxBatchedTokens: 4096, maxModelLen: 256 });
  for (let i = 0; i < 5; i++) solo.add(seq("a"));
  for (let k = 0; k < 3; k++) {
    solo.schedule();
    for (const s of solo.running) s.numComputedTokens = s.length;
  }
  assert.equal(solo.preemptions, 0);
});

// Chunked prefill: a step holds the running decodes plus at most maxBatchedTokens prompt tokens.
Deno.test("chunked prefill: greedy tokens equal the unchunked ones (f32), with prefix-cache hits; steps stay within the budget", async () => {
  // a long prompt (183 tokens, several chunks): a reference case's prompt and generation, repeated
  const c0 = REFERENCE.cases[0];
  const longPrompt = [...c0.prompt_ids, ...c0.generated_ids, ...c0.generated_ids.slice(1), ...c0.generated_ids.slice(1)].slice(0, 300);
  const longReq = (maxTokens: number): GenerateRequest => ({
    promptIds: longPrompt,
    sampling: { temperature: 0 },
    stopping: { maxTokens, ignoreEos: true },
  });
  // unchunked reference (the whole prompt in one step)
  let want: number[] = [];
  await withEngine({ maxNumSeqs: 8, maxBatchedTokens: 4096 }, async (engine) => {
    want = (await collect(engine.generate(longReq(24)))).ids;
  });
  for (const budget of [8, 37]) {
    const steps: { tokens: number; sequences: number; prefill: number }[] = [];
    await withEngine({
      maxNumSeqs: 8,
      maxBatchedTokens: budget,
      onStep: (s) => steps.push({ tokens: s.tokens, sequences: s.sequences, prefill: s.prefillTokens }),
    }, async (engine) => {
      // the reference cases (short prompts, chunked too at budget 8) with the long prompt arriving among them
      const short = REFERENCE.cases.map((c) => collect(engine.generate(greedy(c))));
      const long1 = collect(engine.generate(longReq(24)));
      const results = await Promise.all(short);
      results.forEach((r, i) => assert.deepEqual(r.ids, REFERENCE.cases[i].generated_ids, `case ${i}, budget ${budget}`));
      const a = await long1;
      assert.deepEqual(a.ids, want, `long prompt, budget ${budget}`);
      assert.equal(a.finish.cachedTokens, 0);
      // the same prompt again: its full blocks come from the prefix cache and are skipped
      const b = await collect(engine.generate(longReq(24)));
      assert.deepEqual(b.ids, want, `long prompt from the prefix cache, budget ${budget}`);
      assert.equal(b.finish.cachedTokens, Math.floor((longPrompt.length - 1) / 16) * 16);
      // two identical long prompts at once: the second may only share blocks the first has computed
      const [d, e] = await Promise.all([
        collect(engine.generate(longReq(5))),
        collect(engine.generate({ ...longReq(5), promptIds: [...longPrompt, 7, 8] })),
      ]);
      assert.deepEqual(d.ids, want.slice(0, 5));
      assert.equal(e.ids.length, 5);
      assert.equal(engine.blocks.numUsedBlocks, 0);
    });
    for (const s of steps) assert.ok(s.tokens <= Math.max(budget, s.sequences), `a step of ${s.tokens} tokens, budget ${budget}`);
    assert.ok(steps.some((s) => s.prefill > 0 && s.sequences > 1), "prompt chunks shared steps with decodes");
  }
});

Deno.test("chunked prefill: a long prompt arriving does not stall a running stream", async () => {
  await withEngine({ maxNumSeqs: 4, maxBatchedTokens: 16 }, async (engine) => {
    const seen: number[][] = []; // per step: the running decode's token count so far
    let decoded = 0;
    const stream = (async () => {
      const it = engine.generate({ promptIds: [1, 274], sampling: { temperature: 0 }, stopping: { maxTokens: 60, ignoreEos: true } });
      for await (const e of it) if (e.type === "token") decoded++;
    })();
    while (decoded < 3) await new Promise((r) => setTimeout(r, 1));
    const before = decoded;
    let steps = 0;
    const orig = engine.step.bind(engine);
    engine.step = () => {
      const n = orig();
      steps++;
      seen.push([decoded]);
      return n;
    };
    const longIds = Array.from({ length: 200 }, (_, i) => 1 + (i * 37) % 500);
    const long = collect(engine.generate({ promptIds: longIds, sampling: { temperature: 0 }, stopping: { maxTokens: 2 } }));
    await long;
    await stream;
    // the 200-token prompt took >= 200 / 16 steps, and the stream decoded a token in each of them
    assert.ok(steps >= 13, `steps ${steps}`);
    assert.ok(decoded - before >= Math.min(57, steps - 2), `decoded ${decoded - before} tokens over ${steps} steps`);
  });
});
