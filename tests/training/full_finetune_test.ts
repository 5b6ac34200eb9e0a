// full_finetune_test.ts — full fine-tuning (`trainable: "full"`): the gradients of every trained
// tensor kind (embeddings, q/k/v/o/gate/up/down, both RMSNorms of a layer, the final norm, lm_head)
// against central finite differences of the loss, on stories260K (tied embeddings: the head's and
// the lookup's gradients share one tensor) and on a tiny random model (untied lm_head); a short
// run whose training and validation losses drop; a 4-bit base refused with the reason.
//
// Precision: everything runs in f32 (activations, weights, gradients), the loss is an f32 sum. Per
// tensor we check (a) the directional derivative along u ∝ g/‖g‖ + r/‖r‖ (r random normal: the
// gradient's own direction plus an independent one), step 1e-2, within 2% relative; (b) the three
// entries with the largest |g|, each by its own central difference (step 1e-2), within
// 3% relative + 2e-4 absolute (the f32 loss's rounding over a 2e-2 step is ~1e-5); (c) for the
// embeddings, the directional derivative over the rows of input-only tokens (the lookup's part).
import assert from "node:assert/strict";
import { testEachBackend } from "../native/backends.ts";
import { loadModel, moduleWeightName } from "../../server/model/loader.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { FullFineTuneError, FullWeights } from "../../server/training/full.ts";
import { LoraTrainingModel, type TrainBatch } from "../../server/training/model.ts";
import { Trainer, type TrainHyper } from "../../server/training/trainer.ts";
import type { TokenizedExample } from "../../server/training/dataset.ts";
import { LORA_MODULES } from "../../server/model/llama.ts";
import { Rng } from "../native/rng.ts";
import { STORIES, TRAIN_HYPER } from "../helpers.ts";
import type { Context } from "../../server/ffi/tensor.ts";

/** Two packed sequences (of the given ids, or random ids in [3, vocab)), loss on most positions. */
function batch(rng: Rng, vocab: number, seqs?: number[][]): TrainBatch {
  const tokens: number[] = [], targets: number[] = [], positions: number[] = [], cu = [0];
  for (const s of seqs ?? [9, 6].map((n) => Array.from({ length: n }, () => rng.int(3, vocab)))) {
    s.forEach((t, i) => {
      tokens.push(t);
      positions.push(i);
      targets.push(i + 1 < s.length && i >= 1 ? s[i + 1] : -1);
    });
    cu.push(tokens.length);
  }
  return {
    tokens: Int32Array.from(tokens),
    targets: Int32Array.from(targets),
    positions: Int32Array.from(positions),
    cuSeqlens: Int32Array.from(cu),
  };
}

/** The tensors checked: every kind, in the first and the last layer. */
function sample(full: FullWeights): string[] {
  const last = full.layers.length - 1;
  const names = ["model.embed_tokens.weight", "model.norm.weight"];
  if (full.head) names.push("lm_head.weight");
  for (const l of [0, last]) {
    names.push(`model.layers.${l}.input_layernorm.weight`, `model.layers.${l}.post_attention_layernorm.weight`);
    for (const m of LORA_MODULES) names.push(`${moduleWeightName(l, m)}.weight`);
  }
  return names;
}

async function checkGradients(ctx: Context, dir: string, expectTied: boolean, seqs?: number[][]): Promise<void> {
  const { model } = await loadModel(ctx, dir, { quant: "none", embedDtype: "f32", activations: "f32" });
  const full = new FullWeights(ctx, model);
  const net = new LoraTrainingModel(ctx, model, full);
  const rng = new Rng(7);
  try {
    assert.equal(net.trainable, "full");
    assert.equal(full.head === null, expectTied);
    const b = batch(rng, model.shape.vocab, seqs);
    full.zeroGrad();
    const base = net.forwardBackward(b);
    assert.ok(base.loss > 0.1 && base.loss < 12, `loss ${base.loss}`);
    const byName = new Map(full.tensors.map((t) => [t.name, t]));
    for (const name of sample(full)) {
      const t = byName.get(name);
      assert.ok(t, `${name} is trained`);
      const g = t.grad.readF32(), w0 = t.param.readF32();
      let gn = 0;
      for (const v of g) gn += v * v;
      gn = Math.sqrt(gn);
      assert.ok(gn > 1e-5, `${name}: gradient norm ${gn}`);
      const lossWith = (w: Float32Array) => {
        t.param.write(w);
        return net.evaluate(b).loss;
      };
      // (a) directional derivative along u ∝ g/‖g‖ + r/‖r‖
      const r = rng.normalF32(g.length);
      let rn = 0;
      for (const v of r) rn += v * v;
      const u = Float64Array.from(g, (v, i) => v / gn + r[i] / Math.sqrt(rn));
      const un = Math.sqrt(u.reduce((s, v) => s + v * v, 0));
      for (let i = 0; i < u.length; i++) u[i] /= un;
      const analytic = g.reduce((s, v, i) => s + v * u[i], 0);
      const eps = 1e-2;
      const numeric = (lossWith(w0.map((v, i) => v + eps * u[i])) - lossWith(w0.map((v, i) => v - eps * u[i]))) / (2 * eps);
      assert.ok(Math.abs(numeric - analytic) <= 0.02 * Math.abs(analytic), `${name}: directional analytic ${analytic}, numeric ${numeric}`);
      // (b) the three largest entries, one at a time
      const top = [...g.keys()].sort((a, c) => Math.abs(g[c]) - Math.abs(g[a])).slice(0, 3);
      for (const j of top) {
        const at = (d: number) => lossWith(w0.map((v, i) => (i === j ? v + d : v)));
        const n = (at(eps) - at(-eps)) / (2 * eps);
        assert.ok(Math.abs(n - g[j]) <= 0.03 * Math.abs(g[j]) + 2e-4, `${name}[${j}]: analytic ${g[j]}, numeric ${n}`);
      }
      // (c) embeddings: along a random direction over the rows of tokens that are inputs and never
      // targets, where the lookup's scatter-add dominates (with tied embeddings the head's part, large
      // on target rows, would hide an error in it)
      if (name === "model.embed_tokens.weight") {
        const C = model.shape.hidden, targets = new Set(b.targets);
        const rows = [...new Set(b.tokens)].filter((id) => !targets.has(id));
        assert.ok(rows.length > 0);
        const d = new Float64Array(g.length);
        for (const row of rows) for (let c = 0; c < C; c++) d[row * C + c] = rng.normal();
        const dn = Math.sqrt(d.reduce((s, v) => s + v * v, 0));
        const an = g.reduce((s, v, i) => s + v * d[i] / dn, 0);
        const nu = (lossWith(w0.map((v, i) => v + eps * d[i] / dn)) - lossWith(w0.map((v, i) => v - eps * d[i] / dn))) / (2 * eps);
        assert.ok(Math.abs(nu - an) <= 0.02 * Math.abs(an) + 1e-4, `${name} (input rows ${rows}): analytic ${an}, numeric ${nu}`);
      }
      t.param.write(w0);
    }
  } finally {
    net.dispose();
    full.dispose();
    model.dispose();
  }
}

testEachBackend("full fine-tuning gradients match finite differences (stories260K, tied embeddings)", async (ctx) => {
  // gradients_test.ts's two sequences (story-like tokens: a language model's loss, neither ~0 nor huge)
  await checkGradients(ctx, STORIES, true, [[1, 403, 407, 261, 378, 432, 383, 286, 261], [1, 274, 287, 269, 368, 302]]);
});

testEachBackend("full fine-tuning gradients match finite differences (tiny random model, untied lm_head)", async (ctx) => {
  const dir = await Deno.makeTempDir({ prefix: "qlora-full-" });
  try {
    await makeModel({ shape: "tiny", out: dir, seed: 5, dtype: "f32", std: 0.1 });
    await checkGradients(ctx, dir, false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const HYPER: TrainHyper = {
  ...TRAIN_HYPER,
  nEpochs: 6,
  batchSize: 4,
  learningRate: 3e-3,
  warmupRatio: 0,
  lrScheduler: "constant",
  optimizer: "adamw",
  optimizerBudgetBytes: 0,
  seed: 11,
  computeDtype: "f32",
  trainable: "full",
};

/** Sequences of a repeated pattern with a per-example offset: learnable, and the same for both splits. */
function patterned(n: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const start = rng.int(10, 40);
    const ids = [1, ...Array.from({ length: 24 }, (_, i) => start + (i % 6) * 7)];
    return { ids, weights: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
}

testEachBackend("full fine-tuning of stories260K drives the training and validation losses down", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "none", embedDtype: "f32", activations: "f32" });
  const trainer = new Trainer(ctx, model, HYPER);
  const before = model.embed.buf.readF32();
  try {
    assert.equal(trainer.trainable, "full");
    // stories260K: embeddings 512·64 (tied head), 5 × (q 64·64, k and v 32·64, o 64·64, three 172·64 MLP, two norms 64), final norm
    assert.equal(trainer.numParameters, 512 * 64 + 5 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64 + 2 * 64) + 64);
    const train = patterned(16, 1), val = patterned(8, 2);
    const v0 = trainer.evaluate(val).loss;
    const losses: number[] = [];
    let vLast = NaN;
    await trainer.run(train, val, {
      onStep: (e) => {
        losses.push(e.loss);
        if (e.validationLoss !== undefined) vLast = e.validationLoss;
      },
    });
    assert.equal(losses.length, 24);
    assert.ok(losses.at(-1)! < 0.5 * losses[0], `training loss ${losses[0]} → ${losses.at(-1)}`);
    assert.ok(vLast < 0.5 * v0, `validation loss ${v0} → ${vLast}`);
    // the base itself moved (the embeddings are trained in place) and there is no adapter
    assert.notDeepEqual(model.embed.buf.readF32(), before);
    assert.throws(() => trainer.lora, /no LoRA weights/);
  } finally {
    trainer.dispose();
    model.dispose();
  }
});

testEachBackend("a 4-bit base refuses full fine-tuning, naming the reason", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4" });
  try {
    assert.throws(() => new Trainer(ctx, model, HYPER), (e: unknown) => {
      assert.ok(e instanceof FullFineTuneError);
      assert.match(e.message, /4-bit/);
      assert.match(e.message, /frozen quantization codes/);
      assert.match(e.message, /--quant none/);
      return true;
    });
    // LoRA on the same base still works
    const t = new Trainer(ctx, model, { ...HYPER, trainable: "lora" });
    t.dispose();
  } finally {
    model.dispose();
  }
});
