// bases.ts — the base models jobs train on. The API side needs only a catalog (which models, in
// which quants, how long a sequence) to check a request; the runner also acquires the frozen base
// itself. The server trains on the very model its engine serves (bundleBaseProvider), so there is
// one copy of the base; the runner keeps its own LoRA weights and optimizer.
import type { Context } from "../ffi/tensor.ts";
import type { LlamaModel } from "../model/llama.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { JobQuant } from "./hyperparameters.ts";

/** The frozen base a job trains on. */
export interface TrainingBase {
  id: string;
  ctx: Context;
  model: LlamaModel;
  tokenizer: Tokenizer;
  eosTokenIds: number[];
  maxModelLen: number;
}

/** What a job may name: enough to check a request without loading anything. */
export interface BaseCatalog {
  /** Ids of the models a job may name. */
  models(): string[];
  /** The quants it can train with (`nf4`: QLoRA on the 4-bit base; `none`: 16/32-bit LoRA). */
  quants(): JobQuant[];
  /** Largest sequence the model takes. */
  maxModelLen(model: string): number;
  /** Whether the model has a chat template (chat and preference data need one to train). */
  hasChatTemplate(model: string): boolean;
}

/** Hands out the bases jobs train on (dependency injection: the server decides which). */
export interface BaseProvider extends BaseCatalog {
  acquire(model: string, quant: JobQuant): Promise<TrainingBase>;
  release?(base: TrainingBase): void;
}

/** The job quant a loaded base is in; a base in fp4 / int4 is none of them. */
function jobQuant(quant: string): JobQuant | null {
  return quant === "nf4" || quant === "none" ? quant : null;
}

/** The catalog of a served model: jobs on it, in the quant it is served in. */
export function servedCatalog(model: { id: string; quant: string; maxModelLen: number; hasChatTemplate: boolean }): BaseCatalog {
  const quant = jobQuant(model.quant);
  return {
    models: () => [model.id],
    quants: () => quant ? [quant] : [],
    maxModelLen: () => model.maxModelLen,
    hasChatTemplate: () => model.hasChatTemplate,
  };
}

/**
 * A BaseProvider over a model that is already loaded (the one the serving engine uses, when the
 * runner lives in the engine's thread): jobs with the bundle's quant train on it directly; other
 * quants go to `fallback` when given.
 */
export function bundleBaseProvider(
  ctx: Context,
  bundle: { id: string; loaded: { model: LlamaModel; quant: string }; tokenizer: Tokenizer; eosTokenIds: number[]; maxModelLen: number },
  fallback: BaseProvider | null = null,
): BaseProvider {
  const quant = jobQuant(bundle.loaded.quant);
  const base: TrainingBase = { ...bundle, ctx, model: bundle.loaded.model };
  return {
    models: () => [bundle.id],
    quants: () => [...new Set<JobQuant>([...(quant ? [quant] : []), ...(fallback?.quants() ?? [])])],
    maxModelLen: () => bundle.maxModelLen,
    hasChatTemplate: () => bundle.tokenizer.chatTemplate !== null,
    acquire(model, q) {
      if (model !== bundle.id) return Promise.reject(new Error(`unknown model ${model}`));
      if (q === quant) return Promise.resolve(base);
      if (fallback) return fallback.acquire(model, q);
      return Promise.reject(new Error(`quant ${q} is not available`));
    },
    release(b) {
      if (b !== base) fallback?.release?.(b);
    },
  };
}
