// generation_config.ts — defaults from a model's generation_config.json.

export interface GenerationDefaults {
  /** Token ids that end generation (eos_token_id, number or list). */
  eosTokenIds: number[];
  bosTokenId: number | null;
  padTokenId: number | null;
  /** Sampling defaults (undefined when the file does not set them). */
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  /** false means greedy in transformers; reported, the API still decides. */
  doSample?: boolean;
  maxNewTokens?: number;
  maxLength?: number;
}

export class GenerationConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GenerationConfigError";
  }
}

function ids(v: unknown, key: string): number[] {
  if (v === undefined || v === null) return [];
  const arr = Array.isArray(v) ? v : [v];
  for (const x of arr) {
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) {
      throw new GenerationConfigError(`generation_config.json: "${key}" must be a token id or a list of them`);
    }
  }
  return arr as number[];
}

/** Parses a generation_config.json object. Unknown fields are ignored. */
export function parseGenerationConfig(json: unknown): GenerationDefaults {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new GenerationConfigError("generation_config.json must be a JSON object");
  }
  const c = json as Record<string, unknown>;
  const numberField = (key: string, check: (v: number) => boolean): number | undefined => {
    const v = c[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || !check(v)) {
      throw new GenerationConfigError(`generation_config.json: invalid "${key}": ${JSON.stringify(v)}`);
    }
    return v;
  };
  const out: GenerationDefaults = {
    eosTokenIds: ids(c.eos_token_id, "eos_token_id"),
    bosTokenId: ids(c.bos_token_id, "bos_token_id")[0] ?? null,
    padTokenId: ids(c.pad_token_id, "pad_token_id")[0] ?? null,
  };
  const set = <K extends keyof GenerationDefaults>(k: K, v: GenerationDefaults[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  set("temperature", numberField("temperature", (v) => v >= 0));
  set("topP", numberField("top_p", (v) => v > 0 && v <= 1));
  set("topK", numberField("top_k", (v) => Number.isInteger(v) && v >= 0));
  set("minP", numberField("min_p", (v) => v >= 0 && v <= 1));
  set("repetitionPenalty", numberField("repetition_penalty", (v) => v > 0));
  set("maxNewTokens", numberField("max_new_tokens", (v) => Number.isInteger(v) && v > 0));
  set("maxLength", numberField("max_length", (v) => Number.isInteger(v) && v > 0));
  if (typeof c.do_sample === "boolean") out.doSample = c.do_sample;
  return out;
}

/**
 * Reads DIR/generation_config.json; a missing file gives `fallbackEos` as the only default.
 * Pass the config.json / tokenizer EOS ids as the fallback.
 */
export async function loadGenerationConfig(dir: string, fallbackEos: number[] = []): Promise<GenerationDefaults> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/generation_config.json`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { eosTokenIds: fallbackEos.slice(), bosTokenId: null, padTokenId: null };
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new GenerationConfigError(`${dir}/generation_config.json is not valid JSON: ${(e as Error).message}`);
  }
  const g = parseGenerationConfig(json);
  if (g.eosTokenIds.length === 0) g.eosTokenIds = fallbackEos.slice();
  return g;
}
