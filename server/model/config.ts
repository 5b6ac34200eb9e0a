// config.ts — parse a Hugging Face config.json of a Llama-family decoder into a typed ModelConfig,
// and compute RoPE inverse frequencies with the same scaling rules as transformers'
// modeling_rope_utils (_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
// _compute_llama3_parameters).

export type RopeScaling =
  | { type: "default" }
  | { type: "linear"; factor: number }
  | {
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositionEmbeddings: number;
  };

export type Architecture = "llama" | "mistral" | "qwen2";

export interface ModelConfig {
  architecture: Architecture;
  /** The architectures[0] string, e.g. "LlamaForCausalLM". */
  architectureClass: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Fraction of head_dim that is rotated (1 for all supported models). */
  partialRotaryFactor: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2; or attention_bias: true). o_proj never does here. */
  attentionBias: boolean;
  /** o_proj has a bias (only when attention_bias is true on Llama). */
  oProjBias: boolean;
  mlpBias: boolean;
  hiddenAct: "silu";
  /** Sliding window (Mistral/Qwen2), null when disabled. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  torchDtype: string | null;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const ARCHITECTURES: Record<string, Architecture> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "mistral",
  Qwen2ForCausalLM: "qwen2",
};
const MODEL_TYPES: Record<string, Architecture> = { llama: "llama", mistral: "mistral", qwen2: "qwen2" };

type Json = Record<string, unknown>;

function int(c: Json, key: string, opts: { def?: number; min?: number } = {}): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    throw new ConfigError(`config.json: missing required field "${key}"`);
  }
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    throw new ConfigError(`config.json: "${key}" must be an integer, got ${JSON.stringify(v)}`);
  }
  if (v < (opts.min ?? 1)) throw new ConfigError(`config.json: "${key}" must be ≥ ${opts.min ?? 1}, got ${v}`);
  return v;
}

function num(c: Json, key: string, def?: number): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (def !== undefined) return def;
    throw new ConfigError(`config.json: missing required field "${key}"`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new ConfigError(`config.json: "${key}" must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(c: Json, key: string, def: boolean): boolean {
  const v = c[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== "boolean") throw new ConfigError(`config.json: "${key}" must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function tokenIds(v: unknown, key: string): number[] {
  if (v === undefined || v === null) return [];
  const arr = Array.isArray(v) ? v : [v];
  for (const x of arr) {
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) {
      throw new ConfigError(`config.json: "${key}" must be a token id or a list of them`);
    }
  }
  return arr as number[];
}

function parseRopeScaling(c: Json, maxPos: number): { scaling: RopeScaling; theta?: number } {
  // transformers ≥ 4.56 may use "rope_parameters" (which also carries rope_theta); older configs "rope_scaling".
  const raw = (c.rope_parameters ?? c.rope_scaling) as unknown;
  if (raw === undefined || raw === null) return { scaling: { type: "default" } };
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(`config.json: "rope_scaling" must be an object`);
  const r = raw as Json;
  const theta = typeof r.rope_theta === "number" ? r.rope_theta : undefined;
  const type = (r.rope_type ?? r.type ?? "default") as unknown;
  const factor = (): number => {
    const f = r.factor;
    if (typeof f !== "number" || !(f >= 1)) {
      throw new ConfigError(`config.json: rope scaling "factor" must be a number ≥ 1, got ${JSON.stringify(f)}`);
    }
    return f;
  };
  switch (type) {
    case "default":
      return { scaling: { type: "default" }, theta };
    case "linear":
      return { scaling: { type: "linear", factor: factor() }, theta };
    case "llama3": {
      const f = factor();
      const low = r.low_freq_factor;
      const high = r.high_freq_factor;
      const orig = r.original_max_position_embeddings ?? maxPos;
      if (typeof low !== "number" || typeof high !== "number" || !(high > low) || !(low > 0)) {
        throw new ConfigError(`config.json: llama3 rope scaling needs low_freq_factor < high_freq_factor (got ${low}, ${high})`);
      }
      if (typeof orig !== "number" || !Number.isSafeInteger(orig) || orig <= 0) {
        throw new ConfigError(`config.json: llama3 rope scaling needs a positive original_max_position_embeddings`);
      }
      return {
        scaling: { type: "llama3", factor: f, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: orig },
        theta,
      };
    }
    default:
      throw new ConfigError(`config.json: unsupported rope scaling type ${JSON.stringify(type)} (supported: default, linear, llama3)`);
  }
}

/** Parses a config.json object (already JSON-decoded). */
export function parseModelConfig(json: unknown): ModelConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new ConfigError("config.json must be a JSON object");
  const c = json as Json;
  const archs = c.architectures;
  let architecture: Architecture | undefined;
  let architectureClass = "";
  if (Array.isArray(archs) && archs.length > 0) {
    architectureClass = String(archs[0]);
    architecture = ARCHITECTURES[architectureClass];
    if (!architecture) {
      throw new ConfigError(
        `unsupported architecture "${architectureClass}" (supported: ${Object.keys(ARCHITECTURES).join(", ")})`,
      );
    }
  } else if (typeof c.model_type === "string") {
    architecture = MODEL_TYPES[c.model_type];
    if (!architecture) {
      throw new ConfigError(`unsupported model_type "${c.model_type}" (supported: ${Object.keys(MODEL_TYPES).join(", ")})`);
    }
    architectureClass = Object.keys(ARCHITECTURES).find((k) => ARCHITECTURES[k] === architecture)!;
  } else {
    throw new ConfigError(`config.json has neither "architectures" nor "model_type"`);
  }
  const act = c.hidden_act ?? c.hidden_activation ?? "silu";
  if (act !== "silu" && act !== "swish") throw new ConfigError(`unsupported hidden_act "${act}" (only silu)`);

  const hiddenSize = int(c, "hidden_size");
  const numHeads = int(c, "num_attention_heads");
  const numKvHeads = int(c, "num_key_value_heads", { def: numHeads });
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) headDim = int(c, "head_dim");
  else {
    if (hiddenSize % numHeads !== 0) throw new ConfigError(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
    headDim = hiddenSize / numHeads;
  }
  const partialRotaryFactor = num(c, "partial_rotary_factor", 1);
  if (partialRotaryFactor !== 1) throw new ConfigError(`partial_rotary_factor ${partialRotaryFactor} is not supported`);
  if (headDim % 2 !== 0) throw new ConfigError(`head_dim ${headDim} must be even for RoPE`);
  const maxPositionEmbeddings = int(c, "max_position_embeddings", { def: 2048 });
  const rope = parseRopeScaling(c, maxPositionEmbeddings);
  const ropeTheta = num(c, "rope_theta", rope.theta ?? 10000);

  const attentionBiasFlag = bool(c, "attention_bias", false);
  const attentionBias = architecture === "qwen2" ? true : attentionBiasFlag;
  const oProjBias = architecture === "qwen2" ? false : attentionBiasFlag;
  const useSliding = architecture === "qwen2" ? bool(c, "use_sliding_window", false) : true;
  const sw = c.sliding_window;
  const slidingWindow = useSliding && typeof sw === "number" && sw > 0 ? sw : null;

  return {
    architecture,
    architectureClass,
    hiddenSize,
    intermediateSize: int(c, "intermediate_size"),
    numLayers: int(c, "num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int(c, "vocab_size"),
    maxPositionEmbeddings,
    rmsNormEps: num(c, "rms_norm_eps", 1e-6),
    ropeTheta,
    ropeScaling: rope.scaling,
    partialRotaryFactor,
    tieWordEmbeddings: bool(c, "tie_word_embeddings", false),
    attentionBias,
    oProjBias,
    mlpBias: bool(c, "mlp_bias", false),
    hiddenAct: "silu",
    slidingWindow,
    bosTokenId: tokenIds(c.bos_token_id, "bos_token_id")[0] ?? null,
    eosTokenIds: tokenIds(c.eos_token_id, "eos_token_id"),
    padTokenId: tokenIds(c.pad_token_id, "pad_token_id")[0] ?? null,
    torchDtype: typeof c.torch_dtype === "string" ? c.torch_dtype : typeof c.dtype === "string" ? c.dtype : null,
  };
}

/** Reads and parses DIR/config.json. */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/config.json`);
  } catch (e) {
    throw new ConfigError(`cannot read ${dir}/config.json: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${dir}/config.json is not valid JSON: ${(e as Error).message}`);
  }
  return parseModelConfig(json);
}

/**
 * RoPE inverse frequencies (headDim/2 values), computed in float64 and rounded to float32:
 *   default: 1 / theta^(2i/d)
 *   linear:  default / factor
 *   llama3:  wavelen = 2π/f; wavelen < orig/high → f; wavelen > orig/low → f/factor;
 *            otherwise (1−s)·f/factor + s·f with s = (orig/wavelen − low)/(high − low).
 */
export function ropeInvFreq(config: Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling" | "partialRotaryFactor">): Float32Array {
  const dim = Math.floor(config.headDim * (config.partialRotaryFactor ?? 1));
  const half = dim / 2;
  const out = new Float32Array(half);
  const s = config.ropeScaling;
  for (let i = 0; i < half; i++) {
    let f = 1 / Math.pow(config.ropeTheta, (2 * i) / dim);
    if (s.type === "linear") f /= s.factor;
    else if (s.type === "llama3") {
      const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) f = f / s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
    out[i] = f;
  }
  return out;
}
