// kv_budget_test.ts — the KV cache sized by a memory budget: the flag's parsing, the number of
// blocks that follows from a budget, lazy allocation (resident memory grows by much less than the
// budget at start), and generation identical to a small explicitly sized cache. Also: a cache
// whose unwritten slots hold NaN gives the same logits as a zero-filled one (attention never
// reads a slot before it is written).
import assert from "node:assert/strict";
import { createServer } from "../../server/server.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { DEFAULT_KV_CAP_BYTES, KvBudgetError, kvBytesPerBlock, parseKvCacheMemory, planKvCache } from "../../server/serving/kv_budget.ts";
import { openContext } from "../native/backends.ts";
import { loadModel } from "../../server/model/loader.ts";
import type { KvCache, LlamaModel } from "../../server/model/llama.ts";
import { json, tinyModel } from "../helpers.ts";

const MiB = 1024 ** 2, GiB = 1024 ** 3;

Deno.test("--kv-cache-memory: bytes with a unit, or a fraction of available memory", () => {
  assert.deepEqual(parseKvCacheMemory("2GiB"), { bytes: 2 * GiB });
  assert.deepEqual(parseKvCacheMemory("512MiB"), { bytes: 512 * MiB });
  assert.deepEqual(parseKvCacheMemory("512M"), { bytes: 512 * MiB });
  assert.deepEqual(parseKvCacheMemory("1.5GB"), { bytes: 1.5e9 });
  assert.deepEqual(parseKvCacheMemory("4096B"), { bytes: 4096 });
  assert.deepEqual(parseKvCacheMemory("0.25"), { fraction: 0.25 });
  assert.deepEqual(parseKvCacheMemory("25%"), { fraction: 0.25 });
  assert.deepEqual(parseKvCacheMemory("1"), { fraction: 1 });
  for (const bad of ["", "abc", "2 parsecs", "150%", "0%", "4096", "-1GiB", "0MiB"]) {
    assert.throws(() => parseKvCacheMemory(bad), RangeError, bad);
  }
});

Deno.test("the number of KV blocks follows from the budget", () => {
  const shape = { layers: 32, kvHeads: 32, headDim: 128 }; // Llama-2-7B
  assert.equal(kvBytesPerBlock(shape, 16, 2), 32 * 2 * 16 * 32 * 128 * 2); // 8 MiB: 512 KiB a token
  const base = { shape, dtypeBytes: 2, maxNumSeqs: 64, maxModelLen: 4096 };
  const p = planKvCache({ ...base, budget: { bytes: 2 * GiB } });
  assert.equal(p.numBlocks, 256);
  assert.equal(p.tokens, 4096);
  assert.equal(p.bytes, 2 * GiB);
  assert.equal(p.capped, false);
  // a fraction of MemAvailable
  const f = planKvCache({ ...base, budget: { fraction: 0.5 }, available: () => 8 * GiB });
  assert.equal(f.budgetBytes, 4 * GiB);
  assert.equal(f.numBlocks, 512);
  assert.equal(f.availableBytes, 8 * GiB);
  // the default: min(25% of available, 4 GiB)
  assert.equal(planKvCache({ ...base, available: () => 12 * GiB }).budgetBytes, 3 * GiB);
  assert.equal(planKvCache({ ...base, available: () => 100 * GiB }).budgetBytes, DEFAULT_KV_CAP_BYTES);
  // never more than maxNumSeqs sequences of maxModelLen tokens
  const c = planKvCache({ ...base, maxNumSeqs: 2, maxModelLen: 1024, budget: { bytes: 2 * GiB } });
  assert.equal(c.numBlocks, 128);
  assert.ok(c.capped);
  // an explicit numBlocks wins
  assert.equal(planKvCache({ ...base, budget: { bytes: 2 * GiB }, numBlocks: 7 }).numBlocks, 7);
  assert.throws(() => planKvCache({ ...base, budget: { bytes: 1 * MiB } }), KvBudgetError);
});

/** The process's resident memory (VmRSS; the engine worker is a thread of this process). */
function vmRss(): number {
  return Deno.memoryUsage().rss;
}

Deno.test({
  name: "a server with a KV budget: blocks from the budget, pages resident only when used, same greedy tokens",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-kv-" });
    const modelDir = `${root}/smollm`;
    await makeModel({ shape: "smollm-135m", out: modelDir, seed: 3 });
    const start = (extra: { kvCacheBytes?: number; numBlocks?: number }) =>
      createServer({
        modelDir,
        modelId: "smollm",
        adapterRoot: `${root}/adapters`,
        dataDir: `${root}/data`,
        threads: 2,
        maxNumSeqs: 16,
        env: false,
        log: null,
        training: false,
        ...extra,
      });
    const complete = async (s: Awaited<ReturnType<typeof start>>) => {
      // the completion through the API, and the same request's token ids from the engine
      const res = await s.app.request(
        "/v1/completions",
        json({ model: "smollm", prompt: "Once upon a time there was", max_tokens: 12, temperature: 0, logprobs: 1, ignore_eos: true }),
      );
      assert.equal(res.status, 200);
      const body = await res.json();
      const ids: number[] = [];
      const it = s.deps.host.generate({
        promptIds: s.deps.tokenizer.encode("Once upon a time there was"),
        sampling: { temperature: 0 },
        stopping: { maxTokens: 12, ignoreEos: true },
        adapter: null,
      });
      for await (const ev of it) if (ev.type === "token") ids.push(ev.tokenId);
      return { text: body.choices[0].text, logprobs: body.choices[0].logprobs?.token_logprobs, usage: body.usage, ids };
    };
    const budget = 512 * MiB;
    // first a server with a tiny cache: it pays the one-time costs (the worker's runtime, the
    // loader's buffers) and gives the reference tokens
    const rss0 = vmRss();
    const small = await start({ numBlocks: 4 });
    let reference: Awaited<ReturnType<typeof complete>>;
    try {
      assert.equal(small.deps.host.info.kv.numBlocks, 4);
      reference = await complete(small);
      assert.equal(reference.usage.completion_tokens, 12);
      assert.equal(reference.ids.length, 12);
    } finally {
      await small.close();
    }
    const rss1 = vmRss();
    const s = await start({ kvCacheBytes: budget });
    try {
      const rss2 = vmRss();
      const info = s.deps.host.info;
      const perBlock = 30 * 2 * 16 * 3 * 64 * 2; // layers × K,V × block × kvHeads × headDim × bf16
      assert.equal(info.kv.bytesPerBlock, perBlock);
      assert.equal(info.kv.numBlocks, Math.floor(budget / perBlock));
      assert.equal(info.kv.tokens, info.kv.numBlocks * 16);
      const weights = info.memory.total_bytes - info.memory.kv_cache_bytes;
      const grew = rss2 - rss1;
      console.log(
        `RSS: ${(rss0 / MiB).toFixed(0)} MiB before, ${(rss1 / MiB).toFixed(0)} MiB after a start+stop with 4 blocks, ` +
          `${(rss2 / MiB).toFixed(0)} MiB after the start with a ${(budget / MiB).toFixed(0)} MiB budget ` +
          `(+${(grew / MiB).toFixed(0)} MiB; weights ${(weights / MiB).toFixed(0)} MiB, KV cache ` +
          `${(info.memory.kv_cache_bytes / MiB).toFixed(0)} MiB = ${info.kv.tokens} tokens)`,
      );
      // a touched cache alone would add its 512 MiB
      assert.ok(grew < budget / 4, `RSS grew ${grew} bytes with a ${budget}-byte KV budget`);
      const res = await s.app.request("/v1/models/smollm");
      const memory = (await res.json()).memory;
      assert.equal(memory.kv_cache_budget_bytes, budget);
      assert.equal(memory.kv_cache_blocks, info.kv.numBlocks);
      assert.equal(memory.kv_cache_tokens, info.kv.tokens);
      assert.equal(memory.kv_cache_bytes, info.kv.numBlocks * perBlock);
      assert.deepEqual(await complete(s), reference);
      console.log(`RSS after a completion: ${(vmRss() / MiB).toFixed(0)} MiB`);
    } finally {
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});

function logitsOf(model: LlamaModel, cache: KvCache, prompt: number[], steps: number): number[][] {
  // one sequence on blocks 3, 1, 0 (out of order): prefill, then greedy decode steps
  const table = Int32Array.of(3, 1, 0), bs = cache.shape.blockSize;
  const slot = (p: number) => table[Math.floor(p / bs)] * bs + (p % bs);
  const out: number[][] = [];
  const ids = [...prompt];
  let done = 0;
  for (let s = 0; s <= steps; s++) {
    const toks = ids.slice(done), T = toks.length;
    const logits = model.forward({
      tokens: Int32Array.from(toks),
      positions: Int32Array.from(toks, (_, i) => done + i),
      slots: Int32Array.from(toks, (_, i) => slot(done + i)),
      paged: { blockTables: table, qStart: Int32Array.of(0, T), ctxLens: Int32Array.of(ids.length), S: 1, maxBlocks: 3 },
      logitRows: Int32Array.of(T - 1),
    }, cache);
    out.push(Array.from(logits));
    done = ids.length;
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    ids.push(best);
  }
  return out;
}

Deno.test("unwritten KV slots are never read: a NaN-filled cache gives the zero-filled cache's logits", async () => {
  using ctx = openContext("cpu");
  const { model } = await loadModel(ctx, await tinyModel(), { quant: "nf4" });
  try {
    const prompt = [1, 40, 41, 42, 100, 7, 8, 200, 201, 5, 9, 33, 34, 35, 36, 37, 38, 3];
    const zero = model.newKvCache(4, 16), nan = model.newKvCache(4, 16);
    for (const b of zero.k.concat(zero.v)) new Uint8Array(b.view()).fill(0);
    for (const b of nan.k.concat(nan.v)) new Uint8Array(b.view()).fill(0xff); // all-ones bits: NaN in f32 and bf16
    try {
      const a = logitsOf(model, zero, prompt, 6), b = logitsOf(model, nan, prompt, 6);
      assert.ok(a.flat().every(Number.isFinite));
      assert.deepEqual(b, a);
    } finally {
      zero.dispose();
      nan.dispose();
    }
  } finally {
    model.dispose();
  }
});
