// dpo_test.ts — DPO on the frozen base with LoRA (reference = the base, adapter off): gradients
// against central finite differences of the DPO loss, and a few steps that grow the preferred
// answer's margin until the policy prefers it greedily.
import assert from "node:assert/strict";
import { STORIES, TRAIN_HYPER } from "../helpers.ts";
import { testEachBackend } from "../native/backends.ts";
import { loadModel } from "../../server/model/loader.ts";
import { LoraWeights } from "../../server/training/lora.ts";
import { LoraTrainingModel, type TrainBatch } from "../../server/training/model.ts";
import { LORA_MODULES } from "../../server/model/llama.ts";
import { Rng } from "../native/rng.ts";
import { directionalDerivative } from "./directional.ts";
import { Optimizer } from "../../server/ffi/optim.ts";

/** Pairs packed as [chosen₀, rejected₀, …]: a shared prompt, loss on the answer tokens only. */
function pairBatch(pairs: [number[], number[], number[]][]): TrainBatch {
  const tokens: number[] = [], targets: number[] = [], positions: number[] = [], cu = [0];
  for (const [prompt, chosen, rejected] of pairs) {
    for (const answer of [chosen, rejected]) {
      const s = [...prompt, ...answer];
      s.forEach((t, i) => {
        tokens.push(t);
        positions.push(i);
        targets.push(i + 1 < s.length && i + 1 >= prompt.length ? s[i + 1] : -1);
      });
      cu.push(tokens.length);
    }
  }
  return {
    tokens: Int32Array.from(tokens),
    targets: Int32Array.from(targets),
    positions: Int32Array.from(positions),
    cuSeqlens: Int32Array.from(cu),
  };
}

const PAIRS: [number[], number[], number[]][] = [
  [[1, 403, 407, 261], [378, 432, 383], [274, 287, 269]],
  [[1, 274, 287], [269, 368, 302, 286], [261, 378]],
];

function dpoLoss(policy: Float64Array, ref: Float64Array, beta: number): number {
  let loss = 0;
  for (let i = 0; i < policy.length / 2; i++) {
    const z = beta * ((policy[2 * i] - ref[2 * i]) - (policy[2 * i + 1] - ref[2 * i + 1]));
    loss += Math.log1p(Math.exp(-z)) / (policy.length / 2);
  }
  return loss;
}

testEachBackend("DPO: LoRA gradients match finite differences of the DPO loss; the reference is the base", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4", embedDtype: "f32" });
  const lora = new LoraWeights(ctx, model, { r: 4, alpha: 8, dropout: 0, targetModules: [...LORA_MODULES], useRslora: false }, 1);
  const net = new LoraTrainingModel(ctx, model, lora);
  const rng = new Rng(5);
  try {
    const b = pairBatch(PAIRS);
    const ref = net.sequenceLogprobs(b, false);
    // with B = 0 (PEFT's start) the policy is the reference: z = 0, loss = log 2
    const start = net.sequenceLogprobs(b, true);
    for (let i = 0; i < ref.length; i++) {
      assert.ok(Math.abs(start[i] - ref[i]) < 1e-4, `policy = reference at start (${start[i]} vs ${ref[i]})`);
    }
    for (const p of lora.pairs) p.B.write(rng.normalF32(p.outF * lora.spec.r, 0.05));
    const moved = net.sequenceLogprobs(b, true);
    assert.ok(moved.some((v, i) => Math.abs(v - ref[i]) > 1e-3), "the adapter changes the policy, not the reference");
    assert.deepEqual(Array.from(net.sequenceLogprobs(b, false)), Array.from(ref), "reference unchanged by the adapter");
    const beta = 0.5;
    lora.zeroGrad();
    const r = net.dpoForwardBackward(b, ref, beta);
    assert.ok(Math.abs(r.loss - dpoLoss(moved, ref, beta)) < 1e-5, `loss ${r.loss} vs ${dpoLoss(moved, ref, beta)}`);
    assert.equal(r.pairs, 2);
    const { analytic, numeric, rel } = directionalDerivative(lora, rng, () => dpoLoss(net.sequenceLogprobs(b, true), ref, beta));
    assert.ok(Math.abs(analytic) > 1e-4, `a real gradient (${analytic})`);
    assert.ok(rel < 0.02, `directional derivative: analytic ${analytic}, numeric ${numeric} (rel ${rel})`);
  } finally {
    net.dispose();
    lora.dispose();
    model.dispose();
  }
});

testEachBackend("DPO: steps grow the preferred answer's margin over the rejected one until greedy decoding prefers it", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4" });
  const lora = new LoraWeights(ctx, model, { r: 8, alpha: 16, dropout: 0, targetModules: [...LORA_MODULES], useRslora: false }, 3);
  const net = new LoraTrainingModel(ctx, model, lora);
  const opt = new Optimizer(ctx, "adamw", 0, null);
  try {
    // prompt "Tom and Ben": which next word? chosen / rejected are one token each
    const prompt = [1, 403, 407, 261];
    // the base's greedy next token after the prompt, and a less likely one to prefer instead
    const logitsOf = () => {
      // log p(token | prompt) of each candidate, as a one-token answer
      const cand = [286, 378, 383, 432];
      const b = pairBatch(cand.map((c) => [prompt, [c], [c]] as [number[], number[], number[]]));
      const lp = net.sequenceLogprobs(b, true);
      return cand.map((c, i) => ({ c, lp: lp[2 * i] }));
    };
    const before = logitsOf().sort((x, y) => y.lp - x.lp);
    const rejected = before[0].c, chosen = before[before.length - 1].c;
    const b = pairBatch([[prompt, [chosen], [rejected]]]);
    const ref = net.sequenceLogprobs(b, false);
    const slots = lora.pairs.map((p) => [opt.add(p.dA.bytes / 4), opt.add(p.dB.bytes / 4)]);
    const margins: number[] = [];
    for (let step = 1; step <= 30; step++) {
      lora.zeroGrad();
      const r = net.dpoForwardBackward(b, ref, 0.5);
      margins.push(r.chosenReward - r.rejectedReward);
      const hyper = { lr: 2e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
      lora.pairs.forEach((p, i) => {
        opt.step(slots[i][0], p.A, p.dA, hyper, 1, step);
        opt.step(slots[i][1], p.B, p.dB, hyper, 1, step);
      });
    }
    assert.ok(margins.at(-1)! > margins[0] + 1, `margin grows: ${margins[0]} → ${margins.at(-1)}`);
    const after = logitsOf().sort((x, y) => y.lp - x.lp);
    assert.equal(after[0].c, chosen, `greedy now prefers the chosen token ${chosen} (was ${rejected}): ${JSON.stringify(after)}`);
  } finally {
    opt.dispose();
    net.dispose();
    lora.dispose();
    model.dispose();
  }
});

testEachBackend("DPO through the trainer: batch_size pairs a step, loss log 2 at the start, rewards and accuracy per step", async (ctx) => {
  const { Trainer } = await import("../../server/training/trainer.ts");
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4" });
  const pair = (prompt: number[], chosen: number[], rejected: number[]) => {
    const side = (answer: number[]) => ({ ids: [...prompt, ...answer], weights: [...prompt.map(() => 0), ...answer.map(() => 1)] });
    return { chosen: side(chosen), rejected: side(rejected) };
  };
  const pairs = [
    pair([1, 403, 407, 261], [378, 432], [274]),
    pair([1, 274, 287], [269, 368], [261, 378]),
    pair([1, 403, 407, 261], [378, 432], [286]),
    pair([1, 274, 287], [269, 368], [432]),
  ];
  const trainer = new Trainer(ctx, model, {
    method: "dpo",
    dpoBeta: 0.5,
    // 10 epochs at 1e-2: the validation loss ends orders of magnitude below the bound on every
    // backend (6 epochs at 2e-2 ended within a few hundredths of it, and a kernel's change of
    // summation order crossed it; 10 at 2e-2 overshoots)
    ...TRAIN_HYPER,
    nEpochs: 10,
    batchSize: 2,
    learningRate: 1e-2,
    warmupRatio: 0,
    lrScheduler: "constant",
    optimizer: "adamw",
    optimizerBudgetBytes: 0,
  });
  try {
    const events: import("../../server/training/trainer.ts").StepEvent[] = [];
    assert.equal(trainer.totalSteps(pairs), 20, "4 pairs at batch_size 2 for 10 epochs");
    await trainer.run(pairs, pairs, { onStep: (e) => void events.push(e) });
    assert.equal(events.length, 20);
    assert.ok(Math.abs(events[0].loss - Math.LN2) < 1e-4, `the policy starts as the reference: loss ln 2, got ${events[0].loss}`);
    assert.equal(events[0].dpo!.margin, 0);
    const last = events.at(-1)!;
    assert.ok(last.dpo!.margin > 0.5 && last.dpo!.accuracy === 1, `margin ${last.dpo!.margin}, accuracy ${last.dpo!.accuracy}`);
    console.log(`DPO: validation loss ${last.validationLoss}, margin ${last.dpo!.margin}`);
    assert.ok(last.validationLoss! < Math.LN2 / 2, `validation DPO loss falls (${last.validationLoss})`);
    await assert.rejects(trainer.run([pairs[0].chosen], null), /DPO trains on preference pairs only/);
  } finally {
    trainer.dispose();
    model.dispose();
  }
});
