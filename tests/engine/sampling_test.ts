// sampling_test.ts — determinism, each filter, penalties, logprobs, partial selection, a grammar's mask.
import assert from "node:assert/strict";
import { applyMask, applyPenalties, logprobsOf, makeSamplingParams, Rng, Sampler, topKIndices } from "../../server/engine/sampling.ts";

function randomLogits(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r.next() - 0.5) * 8;
  return x;
}

function draws(s: Sampler, logits: Float32Array, n: number): number[] {
  return Array.from({ length: n }, () => s.sample(logits).token);
}

Deno.test("Rng: same seed → same stream; different seeds differ; uniform in [0,1)", () => {
  const a = new Rng(42), b = new Rng(42), c = new Rng(43);
  const xa = Array.from({ length: 100 }, () => a.next());
  assert.deepEqual(xa, Array.from({ length: 100 }, () => b.next()));
  assert.notDeepEqual(xa, Array.from({ length: 100 }, () => c.next()));
  const big = new Rng(2 ** 40 + 5), big2 = new Rng(5);
  assert.notEqual(big.next(), big2.next());
  let mean = 0;
  for (let i = 0; i < 10000; i++) {
    const v = a.next();
    assert.ok(v >= 0 && v < 1);
    mean += v / 10000;
  }
  assert.ok(Math.abs(mean - 0.5) < 0.02);
});

Deno.test("greedy picks the argmax (lowest id on ties), with or without temperature 0", () => {
  const x = new Float32Array([0.1, 3, -2, 3, 1]);
  assert.equal(new Sampler({ temperature: 0 }).sample(x).token, 1);
  assert.equal(new Sampler({ temperature: 0.7, topK: 1, seed: 1 }).sample(x).token, 1);
});

Deno.test("same seed → same tokens; different seeds → different tokens", () => {
  const x = randomLogits(5000, 1);
  const params = { temperature: 1.0, topP: 0.95, topK: 200, seed: 1234 };
  assert.deepEqual(draws(new Sampler(params), x, 50), draws(new Sampler(params), x, 50));
  assert.notDeepEqual(draws(new Sampler(params), x, 50), draws(new Sampler({ ...params, seed: 99 }), x, 50));
});

Deno.test("plain sampling follows softmax(logits / T)", () => {
  const x = new Float32Array([0, Math.log(2), Math.log(3), -Infinity]);
  const s = new Sampler({ temperature: 1, seed: 5 });
  const counts = [0, 0, 0, 0];
  const N = 30000;
  for (let i = 0; i < N; i++) counts[s.sample(x).token]++;
  assert.equal(counts[3], 0);
  for (const [i, p] of [[0, 1 / 6], [1, 2 / 6], [2, 3 / 6]]) assert.ok(Math.abs(counts[i] / N - p) < 0.015, `${counts}`);
  // Temperature 0.5 squares the ratios: 1:4:9.
  const t = new Sampler({ temperature: 0.5, seed: 6 });
  const c2 = [0, 0, 0, 0];
  for (let i = 0; i < N; i++) c2[t.sample(x).token]++;
  assert.ok(Math.abs(c2[2] / N - 9 / 14) < 0.015, `${c2}`);
});

Deno.test("top_k keeps exactly the k most likely tokens", () => {
  const x = randomLogits(1000, 3);
  const top = new Set(topKIndices(x, 5));
  const s = new Sampler({ topK: 5, seed: 2 });
  const seen = new Set(draws(s, x, 2000));
  for (const t of seen) assert.ok(top.has(t));
  assert.equal(seen.size, 5);
});

Deno.test("top_p keeps the smallest nucleus with mass ≥ p", () => {
  // probs ∝ 8, 4, 2, 1, 1 → 0.5, 0.25, 0.125, 0.0625, 0.0625
  const x = new Float32Array([Math.log(8), Math.log(4), Math.log(2), 0, 0]);
  const seen = new Set(draws(new Sampler({ topP: 0.7, seed: 3 }), x, 2000));
  assert.deepEqual([...seen].sort(), [0, 1]);
  const seen2 = new Set(draws(new Sampler({ topP: 0.8, seed: 3 }), x, 2000));
  assert.deepEqual([...seen2].sort(), [0, 1, 2]);
  // A large vocabulary with a flat tail exercises the growing candidate set.
  const big = new Float32Array(20000).fill(0);
  for (let i = 0; i < 300; i++) big[i * 7] = 12;
  const seen3 = new Set(draws(new Sampler({ topP: 0.9, seed: 4 }), big, 1000));
  for (const t of seen3) assert.equal(t % 7, 0);
  assert.ok(seen3.size > 200);
});

Deno.test("min_p drops tokens below min_p · p_max", () => {
  const x = new Float32Array([Math.log(10), Math.log(5), Math.log(0.9), Math.log(2)]);
  const seen = new Set(draws(new Sampler({ minP: 0.1, seed: 7 }), x, 3000));
  assert.deepEqual([...seen].sort(), [0, 1, 3]);
  // combined with top_k
  const seen2 = new Set(draws(new Sampler({ minP: 0.1, topK: 3, seed: 7 }), x, 3000));
  assert.deepEqual([...seen2].sort(), [0, 1, 3]);
});

Deno.test("repetition penalty (HF): divides positive, multiplies negative, over prompt + output", () => {
  const x = new Float32Array([2, -2, 2, -2, 1]);
  applyPenalties(x, makeSamplingParams({ repetitionPenalty: 2 }), [0, 1, 0], [1]);
  assert.deepEqual([...x], [1, -4, 2, -2, 1]);
});

Deno.test("presence and frequency penalties (OpenAI): output tokens only", () => {
  const x = new Float32Array([1, 1, 1, 1]);
  applyPenalties(x, makeSamplingParams({ presencePenalty: 0.5, frequencyPenalty: 0.25 }), [3, 3], [0, 0, 0, 1]);
  assert.deepEqual([...x], [1 - 0.75 - 0.5, 1 - 0.25 - 0.5, 1, 1]);
  const y = new Float32Array([0, 0]);
  applyPenalties(y, makeSamplingParams({ logitBias: { 1: 5 } }), [], []);
  assert.deepEqual([...y], [0, 5]);
});

Deno.test("penalties steer greedy decoding; input logits are not modified", () => {
  const x = new Float32Array([5, 4.9, 0]);
  const copy = x.slice();
  const s = new Sampler({ temperature: 0, frequencyPenalty: 1 });
  assert.equal(s.sample(x, [], [0]).token, 1);
  assert.deepEqual(x, copy);
});

Deno.test("logprobs: log-softmax after penalties and temperature, before truncation", () => {
  const x = new Float32Array([0, Math.log(2), Math.log(3), Math.log(4)]);
  const r = new Sampler({ temperature: 0, logprobs: 2 }).sample(x);
  assert.equal(r.token, 3);
  assert.ok(Math.abs(r.logprob! - Math.log(0.4)) < 1e-6);
  assert.deepEqual(r.topLogprobs!.map((t) => t.token), [3, 2]);
  assert.ok(Math.abs(r.topLogprobs![1].logprob - Math.log(0.3)) < 1e-6);
  // top_k does not change the reported logprobs; temperature does.
  const k = new Sampler({ topK: 1, logprobs: 0, seed: 1 }).sample(x);
  assert.ok(Math.abs(k.logprob! - Math.log(0.4)) < 1e-6);
  assert.deepEqual(k.topLogprobs, []);
  const t = new Sampler({ temperature: 0.5, topK: 1, logprobs: 1, seed: 1 }).sample(x);
  assert.ok(Math.abs(t.logprob! - Math.log(16 / 30)) < 1e-6);
  assert.equal(new Sampler({ temperature: 0 }).sample(x).logprob, undefined);
  const lp = logprobsOf(x, 0, 4);
  const total = lp.topLogprobs.reduce((a, b) => a + Math.exp(b.logprob), 0);
  assert.ok(Math.abs(total - 1) < 1e-6);
});

Deno.test("topKIndices is exact (vs full sort) and fast on a 256k vocabulary", () => {
  const x = randomLogits(1000, 9);
  x[10] = x[20] = 100; // a tie: lower id first
  const full = Array.from(x.keys()).sort((a, b) => x[b] - x[a] || a - b);
  for (const k of [0, 1, 2, 7, 50, 1000, 2000]) assert.deepEqual([...topKIndices(x, k)], full.slice(0, k));
  const big = randomLogits(256000, 10);
  const s = new Sampler({ topK: 50, topP: 0.9, temperature: 0.8, seed: 1, logprobs: 5, repetitionPenalty: 1.1 });
  const prompt = Array.from({ length: 500 }, (_, i) => i * 13);
  s.sample(big, prompt, []);
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) s.sample(big, prompt, [1, 2, 3]);
  const ms = (performance.now() - t0) / 20;
  assert.ok(ms < 50, `${ms.toFixed(1)} ms per sample`);
});

Deno.test("invalid parameters are rejected with the field name", () => {
  assert.throws(() => makeSamplingParams({ temperature: -1 }), /temperature/);
  assert.throws(() => makeSamplingParams({ topP: 0 }), /top_p/);
  assert.throws(() => makeSamplingParams({ minP: 2 }), /min_p/);
  assert.throws(() => makeSamplingParams({ repetitionPenalty: 0 }), /repetition_penalty/);
  assert.throws(() => makeSamplingParams({ presencePenalty: 3 }), /presence_penalty/);
  assert.throws(() => makeSamplingParams({ logprobs: 21 }), /top_logprobs/);
  assert.throws(() => makeSamplingParams({ seed: 1.5 }), /seed/);
});

Deno.test("a grammar's mask: only allowed tokens are drawn, whatever top_k/top_p/min_p and temperature; logprobs are the model's", () => {
  const V = 100;
  const logits = new Float32Array(V).map((_, i) => (i % 7) - i / 50);
  const mask = new Int32Array(Math.ceil(V / 32));
  const allowed = [3, 40, 77, 99];
  for (const id of allowed) mask[id >> 5] |= 1 << (id & 31);
  for (const p of [{ temperature: 0 }, { temperature: 1 }, { temperature: 1.5, topK: 5 }, { topP: 0.5 }, { minP: 0.2 }]) {
    const s = new Sampler({ ...p, seed: 7, logprobs: 2 });
    for (let i = 0; i < 50; i++) {
      const r = s.sample(logits, [], [], mask);
      assert.ok(allowed.includes(r.token), `${JSON.stringify(p)}: ${r.token}`);
      assert.ok(Number.isFinite(r.logprob!));
      // top logprobs come from the unmasked distribution (token 6 is the most likely overall)
      assert.equal(r.topLogprobs![0].token, 6);
    }
  }
  const x = Float32Array.from(logits);
  assert.equal(applyMask(x, mask), allowed.length);
  assert.equal(x.filter(Number.isFinite).length, allowed.length);
  assert.throws(() => new Sampler({ seed: 1 }).sample(logits, [], [], new Int32Array(4)), /allows no token/);
});
