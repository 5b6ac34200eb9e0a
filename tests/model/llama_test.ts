// llama_test.ts — the Llama forward pass on the paged KV cache, against llama2.c's greedy
// outputs, a float64 reference, itself (prefill+decode vs recompute, batch vs alone), and the
// unquantized model (4-bit quality per quant type).
import assert from "node:assert/strict";
import { openContext, testEachBackend } from "../native/backends.ts";
import { loadModel, memoryReport } from "../../server/model/loader.ts";
import type { KvCache, LlamaModel } from "../../server/model/llama.ts";
import { loadReferenceWeights, referenceForward } from "./reference_llama.ts";

import { STORIES_DIR as STORIES } from "../fixtures.ts";
const REFERENCE = JSON.parse(Deno.readTextFileSync(`${STORIES}/reference_greedy.json`)) as {
  cases: { prompt: string; prompt_ids: number[]; generated_ids: number[]; full_text: string }[];
};

const BLOCK = 16;

/** Runs several sequences' next chunks through the model. Each sequence owns the blocks
 * [firstBlock, firstBlock + maxBlocks); `start` is the position of its first new token. */
function step(
  model: LlamaModel,
  cache: KvCache,
  seqs: { tokens: number[]; start: number; firstBlock: number }[],
  maxBlocks: number,
): Float32Array[] {
  const tokens: number[] = [], positions: number[] = [], slots: number[] = [], logitRows: number[] = [];
  const qStart = [0], ctxLens: number[] = [], tables = new Int32Array(seqs.length * maxBlocks);
  seqs.forEach((s, i) => {
    for (let j = 0; j < s.tokens.length; j++) {
      const pos = s.start + j;
      tokens.push(s.tokens[j]);
      positions.push(pos);
      slots.push((s.firstBlock + Math.floor(pos / BLOCK)) * BLOCK + (pos % BLOCK));
    }
    logitRows.push(tokens.length - 1);
    qStart.push(tokens.length);
    ctxLens.push(s.start + s.tokens.length);
    for (let b = 0; b < maxBlocks; b++) tables[i * maxBlocks + b] = s.firstBlock + b;
  });
  const logits = model.forward(
    {
      tokens: Int32Array.from(tokens),
      positions: Int32Array.from(positions),
      slots: Int32Array.from(slots),
      paged: { blockTables: tables, qStart: Int32Array.from(qStart), ctxLens: Int32Array.from(ctxLens), S: seqs.length, maxBlocks },
      logitRows: Int32Array.from(logitRows),
    },
    cache,
  );
  const V = model.shape.vocab;
  return seqs.map((_, i) => logits.subarray(i * V, (i + 1) * V));
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Greedy decoding of one sequence, prompt prefilled in one step. */
function greedy(model: LlamaModel, cache: KvCache, prompt: number[], n: number): number[] {
  const maxBlocks = Math.ceil((prompt.length + n) / BLOCK);
  let logits = step(model, cache, [{ tokens: prompt, start: 0, firstBlock: 0 }], maxBlocks)[0];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = argmax(logits);
    out.push(t);
    if (i + 1 < n) logits = step(model, cache, [{ tokens: [t], start: prompt.length + i, firstBlock: 0 }], maxBlocks)[0];
  }
  return out;
}

testEachBackend("stories260K unquantized reproduces llama2.c's greedy generations", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "none" });
  const cache = model.newKvCache(64, BLOCK);
  try {
    for (const c of REFERENCE.cases) {
      const got = greedy(model, cache, c.prompt_ids, c.generated_ids.length);
      assert.deepEqual(got, c.generated_ids, `prompt "${c.prompt}"`);
    }
  } finally {
    cache.dispose();
    model.dispose();
  }
});

testEachBackend("logits agree with a float64 reference forward; prefill+decode equals recompute", async (ctx) => {
  const loaded = await loadModel(ctx, STORIES, { quant: "none" });
  const { model, config } = loaded;
  const ref = await loadReferenceWeights(STORIES, config);
  const cache = model.newKvCache(16, BLOCK);
  try {
    const tokens = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337];
    const want = referenceForward(ref, config, tokens);
    const V = config.vocabSize, T = tokens.length;
    // whole sequence at once
    const all = step(model, cache, [{ tokens, start: 0, firstBlock: 0 }], 4)[0];
    // prefill of the first 13, then one token at a time
    let last = step(model, cache, [{ tokens: tokens.slice(0, 13), start: 0, firstBlock: 4 }], 4)[0];
    for (let i = 13; i < T; i++) last = step(model, cache, [{ tokens: [tokens[i]], start: i, firstBlock: 4 }], 4)[0];
    let maxErr = 0, scale = 0;
    for (let v = 0; v < V; v++) {
      maxErr = Math.max(maxErr, Math.abs(all[v] - want[(T - 1) * V + v]));
      scale = Math.max(scale, Math.abs(want[(T - 1) * V + v]));
      assert.ok(Math.abs(all[v] - last[v]) <= 1e-4 * (1 + Math.abs(all[v])), `decode vs recompute at ${v}: ${all[v]} vs ${last[v]}`);
    }
    // f32 activations against float64: 1e-4 of the logit scale
    assert.ok(maxErr <= 1e-4 * scale, `max |Δlogit| ${maxErr} (scale ${scale})`);
  } finally {
    cache.dispose();
    model.dispose();
  }
});

testEachBackend("a batch of different-length sequences equals each run alone", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4", activations: "f32" });
  const cache = model.newKvCache(32, BLOCK);
  try {
    const prompts = [[1, 403, 407, 261, 378], [1, 274, 287, 269, 368, 302, 382, 276, 337, 299, 322, 265, 282, 295, 433, 426, 342, 397], [
      1,
      300,
    ]];
    const alone = prompts.map((p, i) => step(model, cache, [{ tokens: p, start: 0, firstBlock: 8 * i }], 8)[0].slice());
    // mixed: sequence 0 decodes one token after its prompt, 1 and 2 prefill fresh in other blocks
    const next0 = argmax(alone[0]);
    const mixed = step(model, cache, [
      { tokens: [next0], start: prompts[0].length, firstBlock: 0 },
      { tokens: prompts[1], start: 0, firstBlock: 24 },
      { tokens: prompts[2], start: 0, firstBlock: 16 },
    ], 8);
    const decodeAlone = step(model, cache, [{ tokens: [next0], start: prompts[0].length, firstBlock: 0 }], 8)[0];
    // Batching changes which matmul kernel a row goes through (few-row fused vs tiled GEMM),
    // so rows agree to rounding, not bit for bit; a mixed-up row would be off by far more.
    const close = (a: Float32Array, b: Float32Array, what: string) => {
      for (let v = 0; v < a.length; v++) {
        assert.ok(Math.abs(a[v] - b[v]) <= 1e-3 * (1 + Math.abs(b[v])), `${what} at ${v}: ${a[v]} vs ${b[v]}`);
      }
    };
    close(mixed[0], decodeAlone, "decode in batch");
    close(mixed[1], alone[1], "prefill in batch");
    close(mixed[2], alone[2], "short prefill in batch");
  } finally {
    cache.dispose();
    model.dispose();
  }
});

function logSoftmax(x: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  const lse = m + Math.log(s);
  return Float64Array.from(x as ArrayLike<number>, (v) => v - lse);
}

Deno.test("4-bit against unquantized: KL divergence and top-1 agreement per quant type (NF4 closest)", async () => {
  using ctx = openContext("cpu");
  const sequence = [
    ...REFERENCE.cases[0].prompt_ids,
    ...REFERENCE.cases[0].generated_ids,
    ...REFERENCE.cases[1].prompt_ids.slice(1),
    ...REFERENCE.cases[1].generated_ids,
  ];
  const positionsOf = async (quant: "none" | "nf4" | "fp4" | "int4") => {
    const { model } = await loadModel(ctx, STORIES, { quant, embedDtype: "f32" });
    const cache = model.newKvCache(16, BLOCK);
    try {
      // teacher forcing: the logits at every position of one long sequence
      const rows: Float32Array[] = [];
      for (let i = 0; i < sequence.length; i++) {
        rows.push(step(model, cache, [{ tokens: [sequence[i]], start: i, firstBlock: 0 }], 16)[0].slice());
      }
      return rows;
    } finally {
      cache.dispose();
      model.dispose();
    }
  };
  const base = await positionsOf("none");
  const stats: Record<string, { kl: number; top1: number }> = {};
  for (const q of ["nf4", "fp4", "int4"] as const) {
    const rows = await positionsOf(q);
    let kl = 0, agree = 0;
    for (let i = 0; i < rows.length; i++) {
      const p = logSoftmax(base[i]), r = logSoftmax(rows[i]);
      for (let v = 0; v < p.length; v++) kl += Math.exp(p[v]) * (p[v] - r[v]);
      if (argmax(base[i]) === argmax(rows[i])) agree++;
    }
    stats[q] = { kl: kl / rows.length, top1: agree / rows.length };
  }
  console.log(`positions ${base.length}: ${JSON.stringify(stats)}`);
  assert.ok(base.length >= 120);
  assert.ok(stats.nf4.kl < stats.fp4.kl && stats.nf4.kl < stats.int4.kl, JSON.stringify(stats));
  assert.ok(stats.nf4.top1 >= 0.5, JSON.stringify(stats));
});

Deno.test("memory report counts 4-bit weights, constants and unquantized tensors", async () => {
  using ctx = openContext("cpu");
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4" });
  try {
    const cache = model.newKvCache(8, BLOCK);
    const r = memoryReport(model, cache.bytes);
    cache.dispose();
    // 5 layers × (q 64·64 + k 32·64 + v 32·64 + o 64·64 + gate/up/down 3·172·64)
    // (the KV cache is bf16 by default on a 4-bit base: 2 bytes per value)
    assert.equal(r.quantized_parameters, 5 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 172 * 64));
    assert.ok(Math.abs(r.bits_per_quantized_parameter! - 4.127) < 0.01, String(r.bits_per_quantized_parameter));
    assert.equal(r.kv_cache_bytes, 5 * 2 * 8 * BLOCK * 4 * 8 * 2);
    assert.ok(r.unquantized_bytes >= 512 * 64 * 2); // bf16 embeddings at least
  } finally {
    model.dispose();
  }
});

testEachBackend("bf16 activations and KV cache: logits close to f32 activations on the same 4-bit model", async (ctx) => {
  const a = await loadModel(ctx, STORIES, { quant: "nf4", activations: "f32" });
  const b = await loadModel(ctx, STORIES, { quant: "nf4" }); // bf16 is the default on a 4-bit base
  const ca = a.model.newKvCache(8, BLOCK), cb = b.model.newKvCache(8, BLOCK);
  try {
    assert.equal(cb.bytes * 2, ca.bytes);
    const tokens = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298];
    let la = step(a.model, ca, [{ tokens, start: 0, firstBlock: 0 }], 4)[0];
    let lb = step(b.model, cb, [{ tokens, start: 0, firstBlock: 0 }], 4)[0];
    for (let i = 0; i < 5; i++) {
      let maxErr = 0, scale = 0;
      for (let v = 0; v < la.length; v++) {
        maxErr = Math.max(maxErr, Math.abs(la[v] - lb[v]));
        scale = Math.max(scale, Math.abs(la[v]));
      }
      assert.ok(maxErr <= 0.05 * scale, `step ${i}: max |Δlogit| ${maxErr} (scale ${scale})`);
      const next = argmax(la);
      la = step(a.model, ca, [{ tokens: [next], start: tokens.length + i, firstBlock: 0 }], 4)[0];
      lb = step(b.model, cb, [{ tokens: [next], start: tokens.length + i, firstBlock: 0 }], 4)[0];
    }
  } finally {
    ca.dispose();
    cb.dispose();
    a.model.dispose();
    b.model.dispose();
  }
});
