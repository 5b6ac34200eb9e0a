// peft.ts — LoRA adapters in Hugging Face PEFT's format: adapter_config.json (r, lora_alpha,
// use_rslora, target_modules, base_model_name_or_path) and adapter_model.safetensors with
//   base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
//   base_model.model.model.layers.N.mlp.{gate,up,down}_proj.lora_{A,B}.weight
// (lora_A [r, in], lora_B [out, r]; ".default" before ".weight" is accepted too). The reader
// validates everything against the base model's shape before any byte reaches the device.
import { type LlamaShape, LORA_MODULES, type LoraModule } from "../model/llama.ts";
import { f32Tensor, SafetensorsError, SafetensorsFile, type TensorToWrite, toFloat32, writeSafetensors } from "../model/safetensors.ts";

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";
const KEY_PREFIX = "base_model.model.model.layers.";
const MAX_RANK = 1024;
/** The largest |alpha / r| (or alpha / √r) accepted: PEFT's scales are O(1)-O(10); beyond this an
 * adapter only overflows the f32 activations of every row it shares a batch with. */
export const MAX_SCALE = 1e4;

export class PeftError extends Error {
  override name = "PeftError";
}

export interface PeftConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** A module list, or "all-linear". */
  targetModules: string[] | "all-linear";
  baseModel: string | null;
}

/** alpha / sqrt(r) with rsLoRA, else alpha / r. */
export function loraScale(alpha: number, r: number, rslora: boolean): number {
  return rslora ? alpha / Math.sqrt(r) : alpha / r;
}

export function parsePeftConfig(json: unknown): PeftConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new PeftError(`${ADAPTER_CONFIG} must be a JSON object`);
  const j = json as Record<string, unknown>;
  if (j.peft_type !== undefined && j.peft_type !== "LORA") {
    throw new PeftError(`peft_type ${JSON.stringify(j.peft_type)} is not supported (only LORA)`);
  }
  if (j.use_dora === true) throw new PeftError("DoRA adapters (use_dora) are not supported");
  const r = j.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1 || r > MAX_RANK) {
    throw new PeftError(`r must be an integer in [1, ${MAX_RANK}]`);
  }
  const alpha = j.lora_alpha ?? r;
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) throw new PeftError("lora_alpha must be a number");
  // the kernels use the scale as f32: check it there (1e308 is finite in JSON, infinite in f32)
  const scale = Math.fround(loraScale(alpha, r, j.use_rslora === true));
  if (!Number.isFinite(scale) || Math.abs(scale) > MAX_SCALE) {
    throw new PeftError(`lora_alpha ${alpha} gives a LoRA scale of ${scale} (at most ${MAX_SCALE} in magnitude)`);
  }
  const tm = j.target_modules;
  let targetModules: PeftConfig["targetModules"];
  if (tm === "all-linear") targetModules = "all-linear";
  else if (Array.isArray(tm) && tm.every((m) => typeof m === "string")) {
    for (const m of tm) {
      if (!(LORA_MODULES as readonly string[]).includes(m)) {
        throw new PeftError(`target module "${m}" is not one of ${LORA_MODULES.join(", ")}`);
      }
    }
    targetModules = tm as string[];
  } else if (typeof tm === "string") {
    // a regular expression in PEFT; the weights decide which modules are present
    targetModules = "all-linear";
  } else throw new PeftError('target_modules must be a list of module names or "all-linear"');
  const base = j.base_model_name_or_path;
  return { r, loraAlpha: alpha, useRslora: j.use_rslora === true, targetModules, baseModel: typeof base === "string" ? base : null };
}

/** The input and output features of one module of the model. */
export function moduleDims(shape: LlamaShape, module: LoraModule): { in: number; out: number } {
  const q = shape.heads * shape.headDim, kv = shape.kvHeads * shape.headDim;
  switch (module) {
    case "q_proj":
      return { in: shape.hidden, out: q };
    case "k_proj":
    case "v_proj":
      return { in: shape.hidden, out: kv };
    case "o_proj":
      return { in: q, out: shape.hidden };
    case "gate_proj":
    case "up_proj":
      return { in: shape.hidden, out: shape.intermediate };
    case "down_proj":
      return { in: shape.intermediate, out: shape.hidden };
  }
}

function moduleGroup(m: LoraModule): string {
  return m === "q_proj" || m === "k_proj" || m === "v_proj" || m === "o_proj" ? "self_attn" : "mlp";
}

/** The saved key of one LoRA matrix. */
export function peftKey(layer: number, module: LoraModule, which: "A" | "B"): string {
  return `${KEY_PREFIX}${layer}.${moduleGroup(module)}.${module}.lora_${which}.weight`;
}

const KEY_RE = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)(?:\.default)?\.weight$/;

export interface PeftModuleInfo {
  layer: number;
  module: LoraModule;
  rank: number;
  scale: number;
  in: number;
  out: number;
  aName: string;
  bName: string;
  /** Absolute file offsets and dtypes of the two tensors' data. */
  aOffset: number;
  bOffset: number;
  aDtype: string;
  bDtype: string;
}

export interface PeftAdapterInfo {
  config: PeftConfig;
  modules: PeftModuleInfo[];
  /** f32 bytes the adapter takes on the device. */
  deviceBytes: number;
  /** Module names present. */
  moduleNames: LoraModule[];
  /** The weights file's size and where its tensor data starts. */
  fileSize: number;
  dataStart: number;
}

async function readConfig(dir: string): Promise<PeftConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/${ADAPTER_CONFIG}`);
  } catch (e) {
    throw new PeftError(
      e instanceof Deno.errors.NotFound ? `${ADAPTER_CONFIG} is missing` : `cannot read ${ADAPTER_CONFIG}: ${(e as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new PeftError(`${ADAPTER_CONFIG} is not valid JSON`);
  }
  return parsePeftConfig(json);
}

async function openWeights(dir: string): Promise<SafetensorsFile> {
  try {
    return await SafetensorsFile.open(`${dir}/${ADAPTER_WEIGHTS}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new PeftError(`${ADAPTER_WEIGHTS} is missing`);
    if (e instanceof SafetensorsError) throw new PeftError(`${ADAPTER_WEIGHTS}: ${e.message}`);
    throw e;
  }
}

function inspect(config: PeftConfig, st: SafetensorsFile, shape: LlamaShape): PeftAdapterInfo {
  const pairs = new Map<string, { layer: number; module: LoraModule; a?: string; b?: string }>();
  for (const name of st.names) {
    const m = KEY_RE.exec(name);
    if (!m) throw new PeftError(`unexpected tensor "${name}" (only lora_A / lora_B of ${LORA_MODULES.join(", ")} are supported)`);
    const layer = Number(m[1]), module = m[3] as LoraModule;
    if (!(LORA_MODULES as readonly string[]).includes(module) || moduleGroup(module) !== m[2]) {
      throw new PeftError(`tensor "${name}" names an unknown module`);
    }
    if (layer >= shape.layers) throw new PeftError(`tensor "${name}": the model has ${shape.layers} layers`);
    const key = `${layer}.${module}`;
    const p = pairs.get(key) ?? { layer, module };
    if ((m[4] === "A" ? p.a : p.b) !== undefined) throw new PeftError(`duplicate tensor for layer ${layer} ${module} lora_${m[4]}`);
    if (m[4] === "A") p.a = name;
    else p.b = name;
    pairs.set(key, p);
  }
  if (pairs.size === 0) throw new PeftError(`${ADAPTER_WEIGHTS} holds no LoRA weights`);
  const modules: PeftModuleInfo[] = [];
  let deviceBytes = 0;
  for (const p of pairs.values()) {
    if (!p.a || !p.b) throw new PeftError(`layer ${p.layer} ${p.module} has lora_${p.a ? "A" : "B"} but not lora_${p.a ? "B" : "A"}`);
    if (config.targetModules !== "all-linear" && !config.targetModules.includes(p.module)) {
      throw new PeftError(`weights for ${p.module} but target_modules is ${JSON.stringify(config.targetModules)}`);
    }
    const a = st.info(p.a), b = st.info(p.b), d = moduleDims(shape, p.module);
    for (const t of [a, b]) {
      if (!["F32", "F16", "BF16"].includes(t.dtype)) throw new PeftError(`tensor dtype ${t.dtype} is not supported (F32, F16, BF16)`);
    }
    if (a.shape.length !== 2 || b.shape.length !== 2) throw new PeftError(`layer ${p.layer} ${p.module}: lora_A and lora_B must be 2-D`);
    const r = a.shape[0];
    if (r < 1 || r > MAX_RANK) throw new PeftError(`layer ${p.layer} ${p.module}: rank ${r} outside [1, ${MAX_RANK}]`);
    if (a.shape[1] !== d.in) throw new PeftError(`layer ${p.layer} ${p.module}: lora_A is [${a.shape}], the model needs [${r}, ${d.in}]`);
    if (b.shape[0] !== d.out || b.shape[1] !== r) {
      throw new PeftError(`layer ${p.layer} ${p.module}: lora_B is [${b.shape}], the model needs [${d.out}, ${r}]`);
    }
    modules.push({
      layer: p.layer,
      module: p.module,
      rank: r,
      scale: loraScale(config.loraAlpha, r, config.useRslora),
      in: d.in,
      out: d.out,
      aName: p.a,
      bName: p.b,
      aOffset: a.byteOffset,
      bOffset: b.byteOffset,
      aDtype: a.dtype,
      bDtype: b.dtype,
    });
    deviceBytes += (r * d.in + d.out * r) * 4;
  }
  modules.sort((x, y) => x.layer - y.layer || LORA_MODULES.indexOf(x.module) - LORA_MODULES.indexOf(y.module));
  let dataStart = st.fileSize;
  for (const t of st.tensors.values()) dataStart = Math.min(dataStart, t.byteOffset);
  return {
    config,
    modules,
    deviceBytes,
    moduleNames: LORA_MODULES.filter((m) => modules.some((x) => x.module === m)),
    fileSize: st.fileSize,
    dataStart,
  };
}

/** Reads and validates the config and the weights' header (no tensor data). */
export async function inspectPeftAdapter(dir: string, shape: LlamaShape): Promise<PeftAdapterInfo> {
  const config = await readConfig(dir);
  const st = await openWeights(dir);
  try {
    return inspect(config, st, shape);
  } finally {
    st.close();
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Raw tensor bytes → f32 (F32 on a little-endian host: a view, no per-element work). */
function f32(bytes: Uint8Array, dtype: string): Float32Array {
  if (dtype === "F32" && LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }
  return toFloat32(bytes, dtype);
}

export interface PeftWeights {
  a: Float32Array; // [r, in]
  b: Float32Array; // [out, r]
}

/** Throws unless every weight is finite (a NaN or Inf in one adapter would poison the output of every
 * row of its batch that the kernel touches with it). */
export function checkFinite(w: Float32Array, what: string): void {
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) throw new PeftError(`${what} holds a non-finite value (${w[i]}) at element ${i}`);
  }
}

/** Reads the adapter; `each` receives every module's f32 weights in turn (views into one read of
 * the file when it is F32; converted copies for F16/BF16), each checked finite. */
export async function readPeftAdapter(
  dir: string,
  shape: LlamaShape,
  each: (m: PeftModuleInfo, w: PeftWeights) => void | Promise<void>,
): Promise<PeftAdapterInfo> {
  const config = await readConfig(dir);
  const st = await openWeights(dir);
  let info: PeftAdapterInfo, bytes: Uint8Array;
  try {
    info = inspect(config, st, shape);
    bytes = await Deno.readFile(`${dir}/${ADAPTER_WEIGHTS}`);
    if (bytes.length !== st.fileSize) throw new PeftError(`${ADAPTER_WEIGHTS} changed while it was read`);
  } finally {
    st.close();
  }
  for (const m of info.modules) {
    const ai = st.info(m.aName), bi = st.info(m.bName);
    const a = f32(bytes.subarray(ai.byteOffset, ai.byteOffset + ai.byteLength), ai.dtype);
    const b = f32(bytes.subarray(bi.byteOffset, bi.byteOffset + bi.byteLength), bi.dtype);
    checkFinite(a, `layer ${m.layer} ${m.module} lora_A`);
    checkFinite(b, `layer ${m.layer} ${m.module} lora_B`);
    await each(m, { a, b });
  }
  return info;
}

export interface PeftAdapterToWrite {
  r: number;
  loraAlpha: number;
  useRslora?: boolean;
  baseModel?: string | null;
  /** One entry per (layer, module). */
  weights: Array<{ layer: number; module: LoraModule; a: Float32Array; b: Float32Array }>;
  extraConfig?: Record<string, unknown>;
}

/** Writes adapter_config.json and adapter_model.safetensors (F32) as PEFT saves them. */
export async function writePeftAdapter(dir: string, adapter: PeftAdapterToWrite): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const modules = LORA_MODULES.filter((m) => adapter.weights.some((w) => w.module === m));
  const tensors: TensorToWrite[] = [];
  for (const w of adapter.weights) {
    const inF = w.a.length / adapter.r, outF = w.b.length / adapter.r;
    if (!Number.isInteger(inF) || !Number.isInteger(outF)) {
      throw new PeftError(`layer ${w.layer} ${w.module}: weight sizes do not match r=${adapter.r}`);
    }
    tensors.push(f32Tensor(peftKey(w.layer, w.module, "A"), [adapter.r, inF], w.a));
    tensors.push(f32Tensor(peftKey(w.layer, w.module, "B"), [outF, adapter.r], w.b));
  }
  await writeSafetensors(`${dir}/${ADAPTER_WEIGHTS}`, tensors, { format: "pt" });
  const config = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: adapter.baseModel ?? null,
    r: adapter.r,
    lora_alpha: adapter.loraAlpha,
    lora_dropout: 0,
    use_rslora: adapter.useRslora ?? false,
    use_dora: false,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    target_modules: modules,
    ...adapter.extraConfig,
  };
  const tmp = `${dir}/.${ADAPTER_CONFIG}.tmp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(tmp, JSON.stringify(config, null, 2) + "\n");
  await Deno.rename(tmp, `${dir}/${ADAPTER_CONFIG}`);
}
