// make_model.ts — the command line of server/model/make_model.ts: write a deterministic random
// Llama model folder (Hugging Face layout).
//
//   deno run -A scripts/make_model.ts --shape tiny|smollm-135m|tinyllama-1.1b --out DIR [--seed N] [--dtype f32|bf16]
import { makeModel } from "../server/model/make_model.ts";

function usage(): never {
  console.error("usage: deno run -A scripts/make_model.ts --shape tiny|smollm-135m|tinyllama-1.1b --out DIR [--seed N] [--dtype f32|bf16]");
  Deno.exit(2);
}

if (import.meta.main) {
  const args = Deno.args;
  const get = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined || v.startsWith("--")) usage();
    return v;
  };
  const shape = get("--shape");
  const out = get("--out");
  if (!shape || !out) usage();
  const seedStr = get("--seed");
  const seed = seedStr === undefined ? 0 : Number(seedStr);
  if (!Number.isSafeInteger(seed)) usage();
  const dtype = get("--dtype");
  if (dtype !== undefined && dtype !== "f32" && dtype !== "bf16") usage();
  const t0 = performance.now();
  const files = await makeModel({ shape, out, seed, dtype: dtype as "f32" | "bf16" | undefined });
  console.log(`wrote ${out}: ${files.join(", ")} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
