// bases.ts — a BaseProvider for the job tests: one model folder, loaded on first use (nf4 and/or
// none) and kept. The server trains on the base its engine serves instead (server/jobs/bases.ts).
import type { Context } from "../../server/ffi/tensor.ts";
import { openModel } from "../../server/model/bundle.ts";
import type { BaseProvider, TrainingBase } from "../../server/jobs/bases.ts";
import type { JobQuant } from "../../server/jobs/hyperparameters.ts";

export function folderBaseProvider(
  ctx: Context,
  dir: string,
  opts: { id?: string; quants?: JobQuant[] } = {},
): BaseProvider & { dispose(): Promise<void> } {
  const id = opts.id ?? dir.replace(/\/+$/, "").split("/").pop()!;
  const quants = opts.quants ?? ["nf4", "none"];
  const loaded = new Map<string, Promise<TrainingBase>>();
  let maxLen = 2048;
  try {
    maxLen = Number(JSON.parse(Deno.readTextFileSync(`${dir}/config.json`)).max_position_embeddings) || 2048;
  } catch {
    // no readable config: the default length
  }
  return {
    models: () => [id],
    quants: () => quants,
    maxModelLen: () => maxLen,
    hasChatTemplate: () => {
      try {
        Deno.statSync(`${dir}/chat_template.jinja`);
        return true;
      } catch {
        return /"chat_template"/.test(Deno.readTextFileSync(`${dir}/tokenizer_config.json`));
      }
    },
    acquire(model, quant) {
      if (model !== id) return Promise.reject(new Error(`unknown model ${model}`));
      let p = loaded.get(quant);
      if (!p) {
        p = openModel(ctx, dir, { quant, id }).then((b) => ({ ...b, ctx, model: b.loaded.model }));
        loaded.set(quant, p);
        p.catch(() => loaded.delete(quant));
      }
      return p;
    },
    async dispose() {
      const all = [...loaded.values()];
      loaded.clear();
      for (const p of all) await p.then((b) => b.model.dispose(), () => {});
    },
  };
}
