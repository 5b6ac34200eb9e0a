// directional.ts — the gradient check the training tests share: the analytic directional
// derivative of the loss along a random unit direction over every LoRA A and B entry (from the
// accumulated dA, dB) against the central finite difference of the loss along it.
import type { LoraWeights } from "../../server/training/lora.ts";
import type { Rng } from "../native/rng.ts";

/** Returns both derivatives; `loss()` evaluates the loss at the current weights. Leaves the
 * weights at the -eps point: callers that go on restore them from `originals`. */
export function directionalDerivative(lora: LoraWeights, rng: Rng, loss: () => number, eps = 1e-2) {
  const dirs = lora.pairs.map((p) => ({ a: rng.normalF32(p.dA.bytes / 4), b: rng.normalF32(p.dB.bytes / 4) }));
  // a unit direction, so eps is the length of the step in parameter space
  let norm = 0;
  for (const d of dirs) for (const v of [...d.a, ...d.b]) norm += v * v;
  for (const d of dirs) for (const arr of [d.a, d.b]) for (let j = 0; j < arr.length; j++) arr[j] /= Math.sqrt(norm);
  let analytic = 0;
  lora.pairs.forEach((p, i) => {
    const ga = p.dA.readF32(), gb = p.dB.readF32();
    for (let j = 0; j < ga.length; j++) analytic += ga[j] * dirs[i].a[j];
    for (let j = 0; j < gb.length; j++) analytic += gb[j] * dirs[i].b[j];
  });
  const originals = lora.pairs.map((p) => ({ a: p.A.readF32(), b: p.B.readF32() }));
  const lossAt = (e: number) => {
    lora.pairs.forEach((p, i) => {
      p.A.write(originals[i].a.map((v, j) => v + e * dirs[i].a[j]));
      p.B.write(originals[i].b.map((v, j) => v + e * dirs[i].b[j]));
    });
    return loss();
  };
  const numeric = (lossAt(eps) - lossAt(-eps)) / (2 * eps);
  return { analytic, numeric, rel: Math.abs(numeric - analytic) / Math.max(Math.abs(analytic), 1e-6), originals };
}
