// make_model.ts — the command line of server/model/make_model.ts: write a deterministic random
// Llama model folder (Hugging Face layout).
//
//   deno run -A scripts/make_model.ts --shape tiny|smollm-135m|tinyllama-1.1b --out DIR [--seed N] [--dtype f32|bf16]
import { fail, parseCommandLine } from "../server/util/flags.ts";
import { makeModel, SHAPES } from "../server/model/make_model.ts";

if (import.meta.main) {
  const cmd = {
    name: "deno run -A scripts/make_model.ts",
    summary: "Writes a Llama model folder with random weights in a known shape (for tests and benchmarks; it answers gibberish).",
    flags: {
      shape: { type: "string" as const, choices: Object.keys(SHAPES), help: "the model shape (required)" },
      out: { type: "string" as const, arg: "DIR", help: "the folder to write (required)" },
      seed: { type: "int" as const, default: 0, help: "weight seed" },
      dtype: { type: "string" as const, choices: ["f32", "bf16"], help: "weight dtype", defaultText: "the shape's" },
    },
  };
  const { values } = parseCommandLine(cmd);
  if (!values.shape || !values.out) fail(cmd, "--shape and --out are required (--help lists the flags)");
  const shape = values.shape as string, out = values.out as string;
  const seed = values.seed as number;
  const dtype = values.dtype as string | undefined;
  const t0 = performance.now();
  const files = await makeModel({ shape, out, seed, dtype: dtype as "f32" | "bf16" | undefined });
  console.log(`wrote ${out}: ${files.join(", ")} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
