// gradients_test.ts — whole-model LoRA gradients of the training forward/backward against
// central finite differences of the loss, on stories260K (unquantized and NF4 bases).
import assert from "node:assert/strict";
import { testEachBackend } from "../native/backends.ts";
import { loadModel } from "../../server/model/loader.ts";
import { LoraWeights } from "../../server/training/lora.ts";
import { LoraTrainingModel, type TrainBatch } from "../../server/training/model.ts";
import { LORA_MODULES } from "../../server/model/llama.ts";
import { Rng } from "../native/rng.ts";
import { directionalDerivative } from "./directional.ts";
import { DType } from "../../server/ffi/tensor.ts";
import { STORIES } from "../helpers.ts";

function batch(): TrainBatch {
  // two packed sequences of 9 and 6 tokens; loss on a subset of positions
  const seqs = [[1, 403, 407, 261, 378, 432, 383, 286, 261], [1, 274, 287, 269, 368, 302]];
  const tokens: number[] = [], targets: number[] = [], positions: number[] = [], cu = [0];
  for (const s of seqs) {
    s.forEach((t, i) => {
      tokens.push(t);
      positions.push(i);
      targets.push(i + 1 < s.length && i >= 2 ? s[i + 1] : -1);
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

for (const quant of ["none", "nf4"] as const) {
  testEachBackend(`LoRA gradients match finite differences of the loss (base ${quant})`, async (ctx) => {
    const { model } = await loadModel(ctx, STORIES, { quant, embedDtype: "f32" });
    const lora = new LoraWeights(ctx, model, { r: 4, alpha: 8, dropout: 0, targetModules: [...LORA_MODULES], useRslora: false }, 1);
    const trainer = new LoraTrainingModel(ctx, model, lora);
    const rng = new Rng(2);
    try {
      // B starts at zero in PEFT; give it values so gradients reach A too.
      for (const p of lora.pairs) p.B.write(rng.normalF32(p.outF * lora.spec.r, 0.05));
      const b = batch();
      lora.zeroGrad();
      const base = trainer.forwardBackward(b);
      assert.ok(base.loss > 0.1 && base.loss < 10, `loss ${base.loss}`);
      // directional derivative along a random direction u over all A and B entries
      const { analytic, numeric, rel, originals } = directionalDerivative(lora, rng, () => trainer.evaluate(b).loss);
      assert.ok(rel < 0.02, `directional derivative: analytic ${analytic}, numeric ${numeric} (rel ${rel})`);
      // and one coordinate of one B, individually
      const p0 = lora.pairs[3];
      const g0 = p0.dB.readF32()[5];
      const b0 = originals[3].b;
      const at = (d: number) => {
        lora.pairs.forEach((p, i) => {
          p.A.write(originals[i].a);
          p.B.write(i === 3 ? b0.map((v, j) => (j === 5 ? v + d : v)) : originals[i].b);
        });
        return trainer.evaluate(b).loss;
      };
      const n0 = (at(1e-2) - at(-1e-2)) / 2e-2;
      assert.ok(Math.abs(n0 - g0) <= 0.02 * Math.abs(g0) + 1e-4, `dB[5] of ${p0.module}: analytic ${g0}, numeric ${n0}`);
    } finally {
      trainer.dispose();
      lora.dispose();
      model.dispose();
    }
  });
}

testEachBackend("without gradient checkpointing the gradients are the same; bf16 activations are close to f32", async (ctx) => {
  const { model } = await loadModel(ctx, STORIES, { quant: "nf4" });
  const spec = { r: 4, alpha: 8, dropout: 0.1, targetModules: [...LORA_MODULES], useRslora: false };
  const grads = (opts: ConstructorParameters<typeof LoraTrainingModel>[3]) => {
    const lora = new LoraWeights(ctx, model, spec, 1);
    const rng = new Rng(4);
    for (const p of lora.pairs) p.B.write(rng.normalF32(p.outF * spec.r, 0.05));
    const trainer = new LoraTrainingModel(ctx, model, lora, opts);
    trainer.step = 3;
    const loss = trainer.forwardBackward(batch()).loss;
    const g = lora.pairs.flatMap((p) => [...p.dA.readF32(), ...p.dB.readF32()]);
    trainer.dispose();
    lora.dispose();
    return { loss, g };
  };
  try {
    const a = grads({ recompute: true }), b = grads({ recompute: false });
    assert.equal(a.loss, b.loss);
    assert.deepEqual(a.g, b.g);
    const c = grads({ computeDtype: DType.BF16, recompute: false });
    assert.ok(Math.abs(c.loss - a.loss) < 0.05 * a.loss, `bf16 loss ${c.loss} vs f32 ${a.loss}`);
    let dot = 0, na = 0, nc = 0;
    for (let i = 0; i < a.g.length; i++) {
      dot += a.g[i] * c.g[i];
      na += a.g[i] ** 2;
      nc += c.g[i] ** 2;
    }
    const cosine = dot / Math.sqrt(na * nc);
    assert.ok(cosine > 0.99, `cosine(bf16 grad, f32 grad) = ${cosine}`);
  } finally {
    model.dispose();
  }
});
