// generate.ts — `deno task generate --model DIR --prompt TEXT --max-tokens N [--temperature T]
// [--seed S] [--quant Q] [--top-p P] [--top-k K] [--threads N] [--activations f32|bf16] [--stats]`:
// prints the continuation
// (streamed as it is generated; greedy at temperature 0).
import { parseArgs } from "node:util";
import { Context } from "../server/ffi/tensor.ts";
import { openModel } from "../server/model/bundle.ts";
import { Engine } from "../server/engine/engine.ts";
import type { QuantChoice } from "../server/model/loader.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    prompt: { type: "string" },
    "max-tokens": { type: "string", default: "64" },
    temperature: { type: "string", default: "0" },
    "top-p": { type: "string", default: "1" },
    "top-k": { type: "string", default: "0" },
    seed: { type: "string" },
    quant: { type: "string", default: "nf4" },
    activations: { type: "string" },
    threads: { type: "string" },
    stats: { type: "boolean", default: false },
  },
  strict: true,
});
if (!values.model || values.prompt === undefined) {
  console.error(
    "usage: deno task generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--seed S] [--quant nf4|fp4|int4|none]",
  );
  Deno.exit(2);
}
const num = (name: string, v: string | undefined) => {
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n)) {
    console.error(`--${name} must be a number (got ${v})`);
    Deno.exit(2);
  }
  return n;
};

using ctx = new Context({ threads: values.threads ? num("threads", values.threads) : 0 });
if (values.activations !== undefined && values.activations !== "f32" && values.activations !== "bf16") {
  console.error(`--activations must be f32 or bf16 (got ${values.activations})`);
  Deno.exit(2);
}
const bundle = await openModel(ctx, values.model, {
  quant: values.quant as QuantChoice,
  activations: values.activations as "f32" | "bf16" | undefined,
});
const promptIds = bundle.tokenizer.encode(values.prompt, { addSpecialTokens: true });
const engine = new Engine(bundle.loaded.model, bundle.tokenizer, { maxModelLen: bundle.maxModelLen, maxNumSeqs: 1 });
const t0 = performance.now();
let first = 0, n = 0;
const out = new TextEncoder();
try {
  for await (
    const e of engine.generate({
      promptIds,
      sampling: {
        temperature: num("temperature", values.temperature),
        topP: num("top-p", values["top-p"]),
        topK: num("top-k", values["top-k"]),
        seed: values.seed !== undefined ? num("seed", values.seed) : null,
      },
      stopping: { maxTokens: num("max-tokens", values["max-tokens"]), stopTokenIds: bundle.eosTokenIds },
    })
  ) {
    if (e.type === "token") {
      if (n++ === 0) first = performance.now();
    }
    Deno.stdout.writeSync(out.encode(e.text));
    if (e.type === "finish") {
      Deno.stdout.writeSync(out.encode("\n"));
      if (values.stats) {
        const s = (performance.now() - t0) / 1000, decode = (performance.now() - first) / 1000;
        console.error(
          `[${e.promptTokens} prompt + ${e.completionTokens} tokens, ${e.finishReason}; ${s.toFixed(2)} s, decode ${
            ((n - 1) / decode).toFixed(1)
          } tok/s]`,
        );
      }
    }
  }
} finally {
  engine.dispose();
  bundle.loaded.model.dispose();
}
