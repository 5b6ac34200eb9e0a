// loader.ts — turns a Hugging Face model folder into a LlamaModel in device memory: linear
// weights quantized at load (or read pre-quantized from a bnb-4bit model folder), norms in f32,
// embeddings and lm_head 16-bit by default. Tensors are read one at a time so the host never
// holds more than one tensor's source bytes.
import { type Context, type DeviceBuffer, DType, QuantType, type QuantTypeName, QWeight } from "../ffi/tensor.ts";
import { loadModelConfig, type ModelConfig, ropeInvFreq } from "./config.ts";
import { float32ToBf16Bytes, SafetensorsModel, toFloat32 } from "./safetensors.ts";
import { bnbStateKey, readBnbWeight } from "./bnb.ts";
import { Linear } from "./linear.ts";
import { TensorReader } from "./tensor_reader.ts";
import { isCacheEntry, quantizedCacheKey, sweepQuantizedCache, writeQuantizedCache } from "./quantized_cache.ts";
import { type DenseMatrix, type LlamaLayer, LlamaModel, type LlamaShape, LORA_MODULES, type LoraModule } from "./llama.ts";

export type QuantChoice = QuantTypeName | "none";

export interface LoadOptions {
  quant?: QuantChoice; // default nf4
  blocksize?: number; // default 64
  doubleQuant?: boolean; // default true
  /** Storage of embeddings and lm_head: "bf16" (default when quantizing) or "f32";
   * with quant "none" the default keeps the source precision. */
  embedDtype?: "bf16" | "f32";
  /** Activations and KV cache for inference: "bf16" (default with a 4-bit base: bf16 GEMMs for
   * prefill, the int8 fused matvec for decode, half the KV memory) or "f32" (default with quant
   * "none", where the computation stays exact float32). */
  activations?: "f32" | "bf16";
  /** Called as tensors are read, uploaded and quantized (done / total tensors, source bytes read). */
  onProgress?: (p: { done: number; total: number; bytes: number; seconds: number }) => void;
  /** Root of the quantized-base cache (e.g. <data>/quantized): a 16/32-bit checkpoint loaded
   * with nf4/fp4 is read from <root>/<key>/ when there, else quantized and written there (see
   * quantized_cache.ts). Absent: no cache. */
  quantizedCacheDir?: string;
  /** Told which path the quantized cache took (a log line: msg, dir, seconds). */
  onQuantizedCache?: (e: { msg: string; dir?: string; seconds?: number; removed?: string[] }) => void;
  /** "wait" (default): a miss writes the cache before loadModel returns. "background": loadModel
   * returns as soon as the model is loaded and the cache is written meanwhile (status "writing",
   * `done` settles when it is), so a server answers while its first start's cache is written. */
  quantizedCacheWrite?: "wait" | "background";
}

/** What the quantized cache did for a load. */
export interface QuantizedCacheResult {
  status: "hit" | "written" | "writing" | "skipped" | "failed";
  dir?: string;
  seconds?: number;
  reason?: string;
  /** With status "writing": the outcome ("written" or "failed") once the write ends. */
  done?: Promise<QuantizedCacheResult>;
}

export class ModelLoadError extends Error {
  override name = "ModelLoadError";
}

export interface LoadedModel {
  dir: string;
  config: ModelConfig;
  model: LlamaModel;
  quant: QuantChoice;
  /** true when linear weights came pre-quantized from a bitsandbytes model folder (or the quantized cache) */
  prequantized: boolean;
  /** Present when opts.quantizedCacheDir was given. */
  quantizedCache?: QuantizedCacheResult;
}

const PROJ_PATH: Record<LoraModule, string> = {
  q_proj: "self_attn.q_proj",
  k_proj: "self_attn.k_proj",
  v_proj: "self_attn.v_proj",
  o_proj: "self_attn.o_proj",
  gate_proj: "mlp.gate_proj",
  up_proj: "mlp.up_proj",
  down_proj: "mlp.down_proj",
};

export function moduleWeightName(layer: number, module: LoraModule): string {
  return `model.layers.${layer}.${PROJ_PATH[module]}`;
}

function u16(bytes: Uint8Array): Uint16Array {
  return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
}

export function llamaShape(c: ModelConfig): LlamaShape {
  return {
    hidden: c.hiddenSize,
    intermediate: c.intermediateSize,
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    vocab: c.vocabSize,
    rmsEps: c.rmsNormEps,
  };
}

export async function loadModel(ctx: Context, dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const quant = opts.quant ?? "nf4";
  if (!["nf4", "fp4", "int4", "none"].includes(quant)) throw new ModelLoadError(`unknown quant "${quant}" (nf4, fp4, int4 or none)`);
  const root = opts.quantizedCacheDir;
  if (root === undefined || quant === "none") return await loadFrom(ctx, dir, dir, opts);
  const say = opts.onQuantizedCache ?? (() => {});
  if (quant === "int4") {
    say({ msg: "quantized cache: skipped (int4 has no bitsandbytes layout)" });
    const m = await loadFrom(ctx, dir, dir, opts);
    return { ...m, quantizedCache: { status: "skipped", reason: "int4" } };
  }
  const { key, manifest } = await quantizedCacheKey(dir, {
    quant,
    blocksize: opts.blocksize ?? 64,
    doubleQuant: opts.doubleQuant ?? true,
  });
  const removed = await sweepQuantizedCache(root, manifest, key);
  if (removed.length) say({ msg: `quantized cache: removed ${removed.length} stale or partial folder(s)`, removed });
  const entry = `${root}/${key}`;
  if (await isCacheEntry(entry)) {
    const t0 = performance.now();
    try {
      const m = await loadFrom(ctx, dir, entry, opts);
      const seconds = (performance.now() - t0) / 1000;
      say({ msg: `quantized cache: hit ${entry}`, dir: entry, seconds: Math.round(seconds * 100) / 100 });
      return { ...m, quantizedCache: { status: "hit", dir: entry, seconds } };
    } catch (e) {
      say({ msg: `quantized cache: ${entry} is unreadable (${(e as Error).message}); removed, quantizing again`, dir: entry });
      await Deno.remove(entry, { recursive: true }).catch(() => {});
    }
  }
  const m = await loadFrom(ctx, dir, dir, opts);
  if (m.prequantized) return { ...m, quantizedCache: { status: "skipped", reason: "already 4-bit" } };
  const write = async (): Promise<QuantizedCacheResult> => {
    const t0 = performance.now();
    try {
      const out = await writeQuantizedCache(ctx, root, key, manifest, m.model, dir, moduleWeightName);
      const seconds = (performance.now() - t0) / 1000;
      say({ msg: `quantized cache: written ${out} in ${seconds.toFixed(2)} s`, dir: out, seconds: Math.round(seconds * 100) / 100 });
      return { status: "written", dir: out, seconds };
    } catch (e) {
      // a cache that cannot be written costs the next start time, not this one
      say({ msg: `quantized cache: not written (${(e as Error).message})` });
      return { status: "failed", reason: (e as Error).message };
    }
  };
  if (opts.quantizedCacheWrite !== "background") return { ...m, quantizedCache: await write() };
  say({ msg: `quantized cache: writing ${entry} while serving`, dir: entry });
  return { ...m, quantizedCache: { status: "writing", dir: entry, done: write() } };
}

/** Loads the model whose config is in configDir from the safetensors in weightsDir. */
async function loadFrom(ctx: Context, dir: string, weightsDir: string, opts: LoadOptions): Promise<LoadedModel> {
  const quant = opts.quant ?? "nf4";
  const config = await loadModelConfig(dir);
  if (config.slidingWindow !== null && config.slidingWindow < config.maxPositionEmbeddings) {
    // Sequences longer than the window would need windowed attention, which we do not do yet.
    console.warn(`${dir}: sliding_window ${config.slidingWindow} is ignored (full attention is used)`);
  }
  const shape = llamaShape(config);
  const st = await SafetensorsModel.open(weightsDir);
  const owned: { dispose(): void }[] = [];
  let reader: TensorReader | null = null;
  // the 4-bit type of weights read pre-quantized (they keep it, whatever opts.quant says)
  let prequantType: QuantTypeName | null = null;
  try {
    const expect = (name: string, dims: number[]) => {
      if (!st.has(name)) throw new ModelLoadError(`${dir}: missing tensor ${name}`);
      const info = st.info(name);
      if (info.dtype !== "U8" && JSON.stringify(info.shape) !== JSON.stringify(dims)) {
        throw new ModelLoadError(`${name}: shape ${JSON.stringify(info.shape)}, config says ${JSON.stringify(dims)}`);
      }
      return info;
    };
    // Tensors are read into two reused host buffers, the next one read ahead while the current
    // one is quantized or uploaded (model/tensor_reader.ts): no per-tensor allocation.
    reader = new TensorReader(ctx, st);
    const total = st.names.length, t0 = performance.now();
    let done = 0, bytesRead = 0;
    const progress = () => opts.onProgress?.({ done, total, bytes: bytesRead, seconds: (performance.now() - t0) / 1000 });
    const readRaw = async (name: string): Promise<Uint8Array> => {
      progress(); // the tensors before this one are in device memory (quantized) by now
      done = Math.min(total - 1, done + 1);
      bytesRead += st.info(name).byteLength;
      return await reader!.read(name);
    };
    const floatTensor = async (name: string, dims: number[]): Promise<DeviceBuffer> => {
      const info = expect(name, dims);
      const buf = ctx.upload(toFloat32(await readRaw(name), info.dtype));
      owned.push(buf);
      return buf;
    };
    const dense = async (name: string, dims: number[], target: "bf16" | "f32" | "source"): Promise<DenseMatrix> => {
      const info = expect(name, dims);
      const raw = await readRaw(name);
      let m: DenseMatrix;
      const want = target === "source" ? (info.dtype === "BF16" ? "bf16" : "f32") : target;
      if (want === "bf16" && info.dtype === "BF16") m = { buf: ctx.upload(raw), dtype: DType.BF16 };
      else if (want === "bf16") m = { buf: ctx.upload(float32ToBf16Bytes(toFloat32(raw, info.dtype))), dtype: DType.BF16 };
      else m = { buf: ctx.upload(toFloat32(raw, info.dtype)), dtype: DType.F32 };
      owned.push(m.buf);
      return m;
    };
    const linear = async (base: string, rows: number, cols: number, hasBias: boolean): Promise<Linear> => {
      const name = `${base}.weight`;
      let lin: Linear;
      const bias = hasBias ? await floatTensor(`${base}.bias`, [rows]) : null;
      if (bnbStateKey(st, name)) {
        const q = await readBnbWeight(ctx, st, name, readRaw);
        if (q.info.rows !== rows || q.info.cols !== cols) {
          q.dispose();
          throw new ModelLoadError(`${name}: bitsandbytes shape ${q.info.rows}x${q.info.cols}, config says ${rows}x${cols}`);
        }
        prequantType ??= q.info.quantType === QuantType.fp4 ? "fp4" : "nf4";
        lin = new Linear(rows, cols, { kind: "q4", q }, bias);
      } else if (quant !== "none") {
        const info = expect(name, [rows, cols]);
        const raw = await readRaw(name);
        const src = info.dtype === "F32"
          ? new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
          : info.dtype === "BF16" || info.dtype === "F16"
          ? u16(raw)
          : null;
        if (!src) throw new ModelLoadError(`${name}: dtype ${info.dtype} cannot be quantized (F32, F16 or BF16)`);
        const dt = info.dtype === "F32" ? DType.F32 : info.dtype === "BF16" ? DType.BF16 : DType.F16;
        const q = QWeight.quantize(ctx, src, dt, rows, cols, {
          quantType: quant,
          blocksize: opts.blocksize ?? 64,
          doubleQuant: opts.doubleQuant ?? true,
        });
        lin = new Linear(rows, cols, { kind: "q4", q }, bias);
      } else {
        const m = await dense(name, [rows, cols], "source");
        owned.splice(owned.indexOf(m.buf), 1);
        lin = new Linear(rows, cols, { kind: "dense", buf: m.buf, dtype: m.dtype }, bias);
      }
      if (bias) owned.splice(owned.indexOf(bias), 1);
      owned.push(lin);
      return lin;
    };

    const embedTarget = opts.embedDtype ?? (quant === "none" ? "source" : "bf16");
    const C = shape.hidden, I = shape.intermediate, qDim = shape.heads * shape.headDim, kvDim = shape.kvHeads * shape.headDim;
    const embed = await dense("model.embed_tokens.weight", [shape.vocab, C], embedTarget);
    const layers: LlamaLayer[] = [];
    for (let l = 0; l < shape.layers; l++) {
      const p = `model.layers.${l}`;
      const dims: Record<LoraModule, [number, number]> = {
        q_proj: [qDim, C],
        k_proj: [kvDim, C],
        v_proj: [kvDim, C],
        o_proj: [C, qDim],
        gate_proj: [I, C],
        up_proj: [I, C],
        down_proj: [C, I],
      };
      const proj = {} as Record<LoraModule, Linear>;
      for (const m of LORA_MODULES) {
        const bias = m === "o_proj" ? config.oProjBias : ["q_proj", "k_proj", "v_proj"].includes(m) ? config.attentionBias : config.mlpBias;
        proj[m] = await linear(moduleWeightName(l, m), dims[m][0], dims[m][1], bias);
      }
      layers.push({
        inputNorm: await floatTensor(`${p}.input_layernorm.weight`, [C]),
        postNorm: await floatTensor(`${p}.post_attention_layernorm.weight`, [C]),
        proj,
      });
    }
    const finalNorm = await floatTensor("model.norm.weight", [C]);
    const lmHead = config.tieWordEmbeddings && !st.has("lm_head.weight")
      ? null
      : await dense("lm_head.weight", [shape.vocab, C], embedTarget);
    const invFreq = ctx.upload(ropeInvFreq(config));
    owned.push(invFreq);
    const activations = opts.activations ?? (quant === "none" && prequantType === null ? "f32" : "bf16");
    const model = new LlamaModel(ctx, shape, embed, layers, finalNorm, lmHead, invFreq, activations === "bf16" ? DType.BF16 : DType.F32);
    owned.length = 0; // the model owns everything now
    done = total;
    progress();
    return { dir, config, model, quant: prequantType ?? quant, prequantized: prequantType !== null };
  } catch (e) {
    for (const o of owned) o.dispose();
    throw e;
  } finally {
    await reader?.close();
    st.close();
  }
}

export interface MemoryReport {
  quantized_weight_bytes: number;
  quantization_constant_bytes: number;
  unquantized_bytes: number;
  kv_cache_bytes: number;
  total_bytes: number;
  quantized_parameters: number;
  bits_per_quantized_parameter: number | null;
  /** The KV cache budget in bytes (kv_cache_bytes is what its blocks take, at most this). */
  kv_cache_budget_bytes?: number;
  kv_cache_blocks?: number;
  kv_cache_block_size?: number;
  /** Tokens the KV cache holds (blocks × block size), across all sequences. */
  kv_cache_tokens?: number;
}

export function memoryReport(
  model: LlamaModel,
  kvCacheBytes = 0,
  kv?: { budgetBytes: number; blocks: number; blockSize: number },
): MemoryReport {
  const b = model.weightBytes();
  let params = 0;
  for (const layer of model.layers) {
    for (const m of LORA_MODULES) if (layer.proj[m].weight.kind === "q4") params += layer.proj[m].rows * layer.proj[m].cols;
  }
  return {
    quantized_weight_bytes: b.packed,
    quantization_constant_bytes: b.constants,
    unquantized_bytes: b.dense,
    kv_cache_bytes: kvCacheBytes,
    total_bytes: b.packed + b.constants + b.dense + kvCacheBytes,
    quantized_parameters: params,
    bits_per_quantized_parameter: params > 0 ? ((b.packed + b.constants) * 8) / params : null,
    ...(kv
      ? {
        kv_cache_budget_bytes: kv.budgetBytes,
        kv_cache_blocks: kv.blocks,
        kv_cache_block_size: kv.blockSize,
        kv_cache_tokens: kv.blocks * kv.blockSize,
      }
      : {}),
  };
}
