// memory_plan.ts — what a model takes in memory before it is loaded: the frozen base (4-bit codes,
// quantization constants with or without double quantization, 16/32-bit tensors), the KV cache of a
// serving workload, resident adapters, and for training the LoRA weights, their gradients, the
// optimizer state (paged: at most its budget resident) and the activations of one step; plus the
// process itself. Each term uses the formula the code that allocates it uses: the native
// library's qweight_bytes for 4-bit weights, loader.ts's dtypes for dense tensors, kv_budget.ts's
// bytes per block, training/model.ts's workspace layout, peft.ts's adapter device bytes.
//
// The paper's memory table (QLoRA, Dettmers et al. 2023, Guanaco 7B/13B/33B/65B: 5/10/21/41 GB) is
// reproduced under these settings, which are our reading of it: NF4 with double quantization
// (blocksize 64, nested 256), 16-bit embeddings and head, one sequence of LLaMA's full 2,048-token
// context in a 16-bit KV cache, and ~0.5 GB for the CUDA context (PLAN_PAPER_SETTINGS).
import { type LlamaShape, LORA_MODULES, type LoraModule } from "../model/llama.ts";
import { moduleDims } from "../adapters/peft.ts";
import { llamaShape } from "../model/loader.ts";
import { tensorReaderBytes } from "../model/tensor_reader.ts";
import { trainWorkspaceLayout } from "../training/model.ts";
import { kvBytesPerBlock } from "./kv_budget.ts";
import { SHAPES } from "../model/make_model.ts";
import type { ModelConfig } from "../model/config.ts";

export type PlanQuant = "nf4" | "fp4" | "int4" | "none";

export interface PlanModel {
  shape: LlamaShape;
  /** The head shares the embedding (no separate lm_head). */
  tieEmbeddings: boolean;
  /** Bytes per element of the checkpoint's tensors (2: bf16/f16, 4: f32). */
  sourceBytes: number;
}

export interface PlanRequest {
  quant: PlanQuant;
  blocksize?: number;
  doubleQuant?: boolean;
  serving?: {
    /** Tokens the KV cache holds in all (sequences × context, or the KV budget's tokens). */
    kvTokens: number;
    /** Bytes per KV element (2: bf16, the default on a 4-bit base; 4: f32). */
    kvBytes?: number;
    /** Resident adapters: how many, of what rank, on which modules. */
    adapters?: { count: number; r: number; modules?: readonly LoraModule[] };
  };
  training?: {
    r: number;
    modules?: readonly LoraModule[];
    /** Tokens in one micro-batch (batch × sequence length, packed). */
    tokensPerStep: number;
    /** Per-layer recompute (default true). */
    gradientCheckpointing?: boolean;
    /** Bytes per activation element (2: bf16, 4: f32; default 2 on a 4-bit base). */
    activationBytes?: number;
    /** Paged AdamW: at most this many bytes of optimizer state resident (absent: all of it). */
    optimizerBudgetBytes?: number;
  };
  /** The process besides the model (runtime, tokenizer, libraries); default runtimeBytes(). */
  runtimeBytes?: number;
  /** Memory available, to say whether the plan fits. */
  budgetBytes?: number;
}

export interface MemoryPlan {
  quantized_weight_bytes: number;
  quantization_constant_bytes: number;
  unquantized_bytes: number;
  kv_cache_bytes: number;
  adapter_bytes: number;
  lora_parameter_bytes: number;
  lora_gradient_bytes: number;
  optimizer_state_bytes: number;
  activation_bytes: number;
  /** Training: the lm_head's backward widens a bf16 head to f32 for the mixed GEMM (cpu/gemm.cpp). */
  transient_bytes: number;
  /** Loading: the two read buffers of the largest tensor's size (freed after loading, then reused). */
  load_buffer_bytes: number;
  runtime_bytes: number;
  /** The peak: weights and the process, plus the larger of the load buffer and the workload's part. */
  total_bytes: number;
  /** Bits per parameter of the quantized weights (codes + constants). */
  bits_per_quantized_parameter: number | null;
  budget_bytes: number | null;
  fits: boolean | null;
}

/** The process itself: Deno's runtime and V8 heap, the native library, the tokenizer (its size
 * grows with the vocabulary), the engine's or the trainer's own objects. Fitted to what
 * `deno task plan --measure` measured here: 66-71 MiB serving and 77 MiB training at vocab 512,
 * 91 and 109 MiB at vocab 49,152. */
export function runtimeBytes(vocab: number, training: boolean): number {
  const MiB = 2 ** 20, KiB = 2 ** 10;
  return 70 * MiB + 0.45 * KiB * vocab + (training ? 6 * MiB + 0.3 * KiB * vocab : 0);
}

/** A model folder's config as the planner sees it. */
export function configPlanModel(c: ModelConfig): PlanModel {
  return { shape: llamaShape(c), tieEmbeddings: c.tieWordEmbeddings, sourceBytes: c.torchDtype === "float32" ? 4 : 2 };
}

/** A named shape of make_model.ts (bf16 checkpoints), or null. */
export function shapePlanModel(name: string): PlanModel | null {
  const s = Object.hasOwn(SHAPES, name) ? SHAPES[name] : undefined;
  if (!s || s.vocabSize === null) return null;
  return {
    shape: {
      hidden: s.hiddenSize,
      intermediate: s.intermediateSize,
      layers: s.numLayers,
      heads: s.numHeads,
      kvHeads: s.numKvHeads,
      headDim: s.hiddenSize / s.numHeads,
      vocab: s.vocabSize,
      rmsEps: s.rmsNormEps,
    },
    tieEmbeddings: s.tieWordEmbeddings,
    sourceBytes: 2,
  };
}

/** Bytes of one 4-bit weight of n elements: packed codes and constants (cpu/quant.cpp qweight_bytes). */
export function quantizedBytes(
  n: number,
  blocksize: number,
  doubleQuant: boolean,
  nestedBlocksize = 256,
): { packed: number; constants: number } {
  const nb = Math.ceil(n / blocksize);
  return { packed: Math.ceil(n / 2), constants: doubleQuant ? nb + 4 * Math.ceil(nb / nestedBlocksize) + 4 : 4 * nb };
}

/** LoRA parameters (A and B) over the modules of every layer. */
function loraParams(s: LlamaShape, r: number, modules: readonly LoraModule[]): number {
  let n = 0;
  for (const m of modules) {
    const d = moduleDims(s, m);
    n += r * (d.in + d.out);
  }
  return n * s.layers;
}

export function planMemory(model: PlanModel, req: PlanRequest): MemoryPlan {
  const s = model.shape, blocksize = req.blocksize ?? 64, dq = req.doubleQuant ?? true;
  let packed = 0, constants = 0, dense = 0, quantParams = 0;
  for (const m of LORA_MODULES) {
    const { out: rows, in: cols } = moduleDims(s, m);
    if (req.quant === "none") dense += rows * cols * model.sourceBytes * s.layers;
    else {
      const q = quantizedBytes(rows * cols, blocksize, dq);
      packed += q.packed * s.layers;
      constants += q.constants * s.layers;
      quantParams += rows * cols * s.layers;
    }
  }
  // loader.ts: embeddings and head in bf16 on a 4-bit base (else the checkpoint's dtype); norms
  // and the rotary frequencies in f32
  const embedBytes = req.quant === "none" ? model.sourceBytes : 2;
  dense += s.vocab * s.hidden * embedBytes * (model.tieEmbeddings ? 1 : 2);
  dense += (2 * s.layers + 1) * s.hidden * 4 + (s.headDim / 2) * 4;

  let kv = 0, adapters = 0;
  if (req.serving) {
    kv = kvBytesPerBlock(s, 1, req.serving.kvBytes ?? (req.quant === "none" ? 4 : 2)) * req.serving.kvTokens;
    const a = req.serving.adapters;
    if (a) adapters = a.count * loraParams(s, a.r, a.modules ?? LORA_MODULES) * 4; // f32 on the device (peft.ts)
  }
  let loraBytes = 0, grads = 0, optimizer = 0, activations = 0, transient = 0;
  const t = req.training;
  if (t) {
    const p = loraParams(s, t.r, t.modules ?? LORA_MODULES);
    loraBytes = p * 4;
    grads = p * 4;
    const state = 2 * p * 4; // AdamW's m and v, f32
    optimizer = t.optimizerBudgetBytes !== undefined ? Math.min(state, t.optimizerBudgetBytes) : state;
    const L = trainWorkspaceLayout(s, t.tokensPerStep, t.r, t.activationBytes ?? (req.quant === "none" ? 4 : 2));
    const sum = (o: Record<string, number>) => Object.values(o).reduce((x, y) => x + y, 0);
    activations = sum(L.shared) + sum(L.layer) * ((t.gradientCheckpointing ?? true) ? 1 : s.layers) + L.layerInput * (s.layers + 1);
    if (embedBytes === 2) transient = s.vocab * s.hidden * 4;
  }
  // the loader reads tensors into two buffers (one read ahead): at most the two largest resident
  const largest = tensorReaderBytes(
    [
      s.vocab * s.hidden,
      ...(model.tieEmbeddings ? [] : [s.vocab * s.hidden]),
      ...LORA_MODULES.map((m) => moduleDims(s, m).in * moduleDims(s, m).out),
    ].map((n) => n * model.sourceBytes),
  );
  const runtime = req.runtimeBytes ?? runtimeBytes(s.vocab, t !== undefined);
  const workload = kv + adapters + loraBytes + grads + optimizer + activations + transient;
  const total = packed + constants + dense + runtime + Math.max(largest, workload);
  return {
    quantized_weight_bytes: packed,
    quantization_constant_bytes: constants,
    unquantized_bytes: dense,
    kv_cache_bytes: kv,
    adapter_bytes: adapters,
    lora_parameter_bytes: loraBytes,
    lora_gradient_bytes: grads,
    optimizer_state_bytes: optimizer,
    activation_bytes: activations,
    transient_bytes: transient,
    load_buffer_bytes: largest,
    runtime_bytes: runtime,
    total_bytes: total,
    bits_per_quantized_parameter: quantParams > 0 ? ((packed + constants) * 8) / quantParams : null,
    budget_bytes: req.budgetBytes ?? null,
    fits: req.budgetBytes === undefined ? null : total <= req.budgetBytes,
  };
}

/** The paper's settings for its memory table (see the file comment). */
export const PLAN_PAPER_SETTINGS: PlanRequest = {
  quant: "nf4",
  blocksize: 64,
  doubleQuant: true,
  serving: { kvTokens: 2048, kvBytes: 2 },
  runtimeBytes: 0.5e9,
};

/** The paper's Guanaco table (GB, 10⁹ bytes). */
export const PAPER_MEMORY_GB: Record<string, number> = { "llama-7b": 5, "llama-13b": 10, "llama-33b": 21, "llama-65b": 41 };
