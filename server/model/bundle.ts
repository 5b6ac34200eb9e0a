// bundle.ts — everything the server needs of one model folder: the weights in device memory,
// the tokenizer, the chat template and the generation defaults.
import type { Context } from "../ffi/tensor.ts";
import { type LoadedModel, loadModel, type LoadOptions } from "./loader.ts";
import { Tokenizer } from "./tokenizer.ts";
import { type GenerationDefaults, loadGenerationConfig } from "./generation_config.ts";

export interface ModelBundle {
  /** The id the API lists (folder name unless given). */
  id: string;
  loaded: LoadedModel;
  tokenizer: Tokenizer;
  generation: GenerationDefaults;
  /** Ids that end generation: generation_config's eos ids, else config/tokenizer eos. */
  eosTokenIds: number[];
  maxModelLen: number;
}

export async function openModel(ctx: Context, dir: string, opts: LoadOptions & { id?: string } = {}): Promise<ModelBundle> {
  const tokenizer = await Tokenizer.load(dir);
  const loaded = await loadModel(ctx, dir, opts);
  try {
    const fallbackEos = loaded.config.eosTokenIds.length > 0
      ? loaded.config.eosTokenIds
      : tokenizer.eosTokenId !== null
      ? [tokenizer.eosTokenId]
      : [];
    const generation = await loadGenerationConfig(dir, fallbackEos);
    const eosTokenIds = generation.eosTokenIds.length > 0 ? generation.eosTokenIds : fallbackEos;
    const id = opts.id ?? dir.replace(/\/+$/, "").split("/").pop()!;
    return { id, loaded, tokenizer, generation, eosTokenIds, maxModelLen: loaded.config.maxPositionEmbeddings };
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
}
