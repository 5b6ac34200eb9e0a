// generate.ts — `deno task generate --model DIR --prompt TEXT --max-tokens N [--temperature T]
// [--seed S] [--quant Q] [--top-p P] [--top-k K] [--threads N] [--activations f32|bf16] [--stats]`:
// prints the continuation
// (streamed as it is generated; greedy at temperature 0).
import { fail, parseCommandLine } from "../server/util/flags.ts";
import { Context } from "../server/ffi/tensor.ts";
import { openModel } from "../server/model/bundle.ts";
import { Engine } from "../server/engine/engine.ts";
import type { QuantChoice } from "../server/model/loader.ts";

const cmd = {
  name: "deno task generate",
  summary: "Prints a prompt's continuation, streamed as it is generated (greedy at temperature 0).",
  flags: {
    model: { type: "string" as const, arg: "DIR", help: "a Hugging Face model folder", defaultText: "models/stories260K" },
    prompt: { type: "string" as const, arg: "TEXT", help: "the prompt (required)" },
    "max-tokens": { type: "string" as const, arg: "N", default: "64", help: "tokens to generate" },
    temperature: { type: "string" as const, arg: "T", default: "0", help: "sampling temperature (0: greedy)" },
    "top-p": { type: "string" as const, arg: "P", default: "1", help: "nucleus sampling" },
    "top-k": { type: "string" as const, arg: "K", default: "0", help: "top-k sampling (0: off)" },
    seed: { type: "string" as const, arg: "S", help: "sampling seed", defaultText: "random" },
    quant: { type: "string" as const, choices: ["nf4", "fp4", "int4", "none"], default: "nf4", help: "quantization at load" },
    activations: {
      type: "string" as const,
      choices: ["f32", "bf16"],
      help: "activations and KV cache",
      defaultText: "bf16 on a 4-bit base, f32 with --quant none",
    },
    threads: { type: "string" as const, arg: "N", help: "CPU threads", defaultText: "all cores" },
    stats: { type: "boolean" as const, default: false, help: "print timing figures after the text" },
  },
};
const values = parseCommandLine(cmd).values as Record<string, string | undefined> & { stats: boolean };
values.model ??= new URL("../models/stories260K", import.meta.url).pathname;
if (values.prompt === undefined) fail(cmd, "--prompt TEXT is required (deno task generate --help lists the flags)");
try {
  if (!Deno.statSync(`${values.model}/config.json`).isFile) throw new Error();
} catch {
  fail(cmd, `${values.model} is not a model folder (no config.json)`);
}
const num = (name: string, v: string | undefined) => {
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n)) fail(cmd, `--${name} must be a number (got ${v})`);
  return n;
};

const threads = values.threads ? num("threads", values.threads) : 0;
let ctx: Context;
let bundle: Awaited<ReturnType<typeof openModel>>;
try {
  ctx = new Context({ threads });
  bundle = await openModel(ctx, values.model, {
    quant: values.quant as QuantChoice,
    activations: values.activations as "f32" | "bf16" | undefined,
  });
} catch (e) {
  fail(cmd, (e as Error).message); // e.g. the native library is not built: `deno task build`
}
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
  ctx.dispose();
}
