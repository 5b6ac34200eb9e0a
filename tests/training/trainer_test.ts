// trainer_test.ts — a LoRA fine-tune on a small synthetic chat dataset drives the loss well
// below its start and makes the model answer one question with one fixed phrase, while the
// base model (no adapter) answers as before. Also: determinism for a seed, schedules.
import assert from "node:assert/strict";
import { SECRET_ANSWER, SECRET_QUESTION, secretWordJsonl, TRAIN_HYPER } from "../helpers.ts";
import { openContext } from "../native/backends.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { openModel } from "../../server/model/bundle.ts";
import { applyChatTemplate } from "../../server/model/chat_template.ts";
import { LORA_MODULES } from "../../server/model/llama.ts";
import { parseJsonl, tokenizeExample } from "../../server/training/dataset.ts";
import { learningRateAt, Trainer } from "../../server/training/trainer.ts";
import type { LlamaModel } from "../../server/model/llama.ts";
import type { LoraWeights } from "../../server/training/lora.ts";
import type { AdapterSlots } from "../../server/ffi/ops.ts";

const QUESTION = SECRET_QUESTION, ANSWER = SECRET_ANSWER;

/** Greedy continuation computed with the model's forward, with the LoRA applied through the
 * multi-adapter op when `lora` is given. */
function greedyIds(model: LlamaModel, prompt: number[], n: number, lora?: LoraWeights): number[] {
  const cache = model.newKvCache(8, 16);
  const ids = prompt.slice();
  try {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const start = i === 0 ? 0 : ids.length - 1;
      const tokens = ids.slice(start);
      const T = tokens.length;
      const adapters = lora
        ? {
          rowAdapter: new Int32Array(T),
          slots: (layer: number, m: (typeof LORA_MODULES)[number]): AdapterSlots | null => {
            const p = lora.get(layer, m);
            if (!p) return null;
            return {
              aPtrs: BigUint64Array.of(BigInt(Deno.UnsafePointer.value(p.A.ptr))),
              bPtrs: BigUint64Array.of(BigInt(Deno.UnsafePointer.value(p.B.ptr))),
              ranks: Int32Array.of(lora.spec.r),
              scales: Float32Array.of(lora.scale),
            };
          },
        }
        : undefined;
      const logits = model.forward({
        tokens: Int32Array.from(tokens),
        positions: Int32Array.from(tokens, (_, j) => start + j),
        slots: Int32Array.from(tokens, (_, j) => start + j),
        paged: {
          blockTables: Int32Array.from({ length: 8 }, (_, j) => j),
          qStart: Int32Array.of(0, T),
          ctxLens: Int32Array.of(start + T),
          S: 1,
          maxBlocks: 8,
        },
        logitRows: Int32Array.of(T - 1),
        adapters,
      }, cache);
      let best = 0;
      for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
      out.push(best);
      ids.push(best);
    }
    return out;
  } finally {
    cache.dispose();
  }
}

Deno.test("a LoRA fine-tune teaches the tiny model a fixed answer; the base model is unchanged", async () => {
  const dir = await Deno.makeTempDir();
  using ctx = openContext("cpu");
  // std 0.15: with the default 0.02 the tied embeddings are too small for any hidden state to
  // give a confident next token, whatever LoRA learns.
  await makeModel({ shape: "tiny", out: dir, seed: 1, std: 0.15 });
  const bundle = await openModel(ctx, dir, { quant: "nf4" });
  const { model } = bundle.loaded;
  const tok = bundle.tokenizer;
  try {
    const examples = parseJsonl(secretWordJsonl()).map((e) => tokenizeExample(tok, e));
    const prompt = applyChatTemplate(tok, [{ role: "user", content: QUESTION }], { addGenerationPrompt: true }).ids;
    const answerIds = tok.encode(ANSWER, { addSpecialTokens: false });
    const before = greedyIds(model, prompt, answerIds.length);
    const trainer = new Trainer(ctx, model, TRAIN_HYPER);
    const losses: number[] = [];
    const result = await trainer.run(examples, null, { onStep: (e) => void losses.push(e.loss) });
    assert.equal(result, "completed");
    assert.equal(losses.length, trainer.totalSteps(examples));
    const first = losses[0], last = losses.at(-1)!;
    assert.ok(last < 0.25 * first, `loss ${first} → ${last}`);
    const tuned = greedyIds(model, prompt, answerIds.length, trainer.lora);
    assert.equal(tok.decode(tuned), ANSWER, `tuned model answers ${JSON.stringify(tok.decode(tuned))}`);
    const after = greedyIds(model, prompt, answerIds.length);
    assert.deepEqual(after, before, "the base model's output must not change");
    assert.notDeepEqual(before, tuned);
    trainer.dispose();
  } finally {
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("learning-rate schedules: warmup, then linear, cosine or constant", () => {
  const h = { learningRate: 1, warmupRatio: 0.1 };
  assert.equal(learningRateAt(5, 100, { ...h, lrScheduler: "linear" }), 0.5);
  assert.equal(learningRateAt(10, 100, { ...h, lrScheduler: "linear" }), 1);
  assert.ok(Math.abs(learningRateAt(55, 100, { ...h, lrScheduler: "linear" }) - 0.5) < 1e-12);
  assert.ok(Math.abs(learningRateAt(55, 100, { ...h, lrScheduler: "cosine" }) - 0.5) < 1e-12);
  assert.equal(learningRateAt(100, 100, { ...h, lrScheduler: "cosine" }), 0);
  assert.equal(learningRateAt(80, 100, { ...h, lrScheduler: "constant" }), 1);
});
