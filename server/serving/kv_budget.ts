// kv_budget.ts — the KV cache sized by a memory budget (as vLLM's gpu_memory_utilization or
// llama.cpp's context): bytes with a unit, or a fraction of the memory available once the model
// is loaded. The number of KV blocks follows from the budget and the model's shape.
import type { LlamaShape } from "../model/llama.ts";

/** A KV budget: absolute bytes, or a fraction of MemAvailable after the model is loaded. */
export type KvBudget = { bytes: number } | { fraction: number };

// The default: min(25% of available, 4 GiB). A Llama-2-7B-shaped model in NF4 takes ~3.9 GB of
// weights; on a 16 GB workstation roughly 10-12 GB are still available after loading it, so 25%
// (~3 GiB: ~6,000 tokens of Llama-2-7B's 512 KiB/token bf16 KV) leaves most of the machine to the
// OS, the HTTP side, adapters and fine-tuning jobs. The 4 GiB cap keeps a big machine from
// handing a serving process a large share of its memory unasked (4 GiB is 8,192 tokens of
// Llama-2-7B, 32,768 of Llama-3-8B with its 8 KV heads); ask for more with --kv-cache-memory.
// Pages are touched only when used (the cache is not zero-filled), so an idle server costs far
// less than its budget either way.
export const DEFAULT_KV_FRACTION = 0.25;
export const DEFAULT_KV_CAP_BYTES = 4 * 1024 ** 3;

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1e3,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1e12,
  tib: 1024 ** 4,
};

/**
 * Parses a --kv-cache-memory value: bytes with a unit ("2GiB", "512MiB", "1.5GB", "1048576B"),
 * or a fraction of available memory ("0.25", "25%"). A bare number above 1 needs a unit.
 */
export function parseKvCacheMemory(text: string): KvBudget {
  const s = text.trim();
  const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(s);
  if (pct) {
    const f = Number(pct[1]) / 100;
    if (!(f > 0 && f <= 1)) throw new RangeError(`"${text}": a percentage must be in (0, 100]`);
    return { fraction: f };
  }
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(s);
  if (!m) throw new RangeError(`"${text}" is not a size (e.g. 2GiB, 512MiB) or a fraction (e.g. 0.25, 25%)`);
  const n = Number(m[1]), unit = m[2].toLowerCase();
  if (unit === "") {
    if (n > 0 && n <= 1) return { fraction: n };
    throw new RangeError(`"${text}": a bare number is a fraction in (0, 1]; give bytes a unit (e.g. ${n}MiB)`);
  }
  const mult = UNITS[unit];
  if (mult === undefined) throw new RangeError(`"${text}": unknown unit "${m[2]}" (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)`);
  const bytes = Math.floor(n * mult);
  if (bytes <= 0) throw new RangeError(`"${text}" is not a positive size`);
  return { bytes };
}

/** MemAvailable from /proc/meminfo in bytes. Deno reads /proc only with --allow-all; otherwise
 * Deno.systemMemoryInfo().available, which on Linux is the same MemAvailable. */
export function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+)\s*kB/m.exec(Deno.readTextFileSync("/proc/meminfo"));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.systemMemoryInfo().available;
}

/** Bytes of one KV block: layers × 2 (K and V) × blockSize × kvHeads × headDim × dtype size. */
export function kvBytesPerBlock(shape: Pick<LlamaShape, "layers" | "kvHeads" | "headDim">, blockSize: number, dtypeBytes: number): number {
  return shape.layers * 2 * blockSize * shape.kvHeads * shape.headDim * dtypeBytes;
}

export interface KvPlan {
  numBlocks: number;
  blockSize: number;
  /** numBlocks × blockSize */
  tokens: number;
  /** numBlocks × bytes per block */
  bytes: number;
  /** The budget asked for, in bytes (after resolving a fraction). */
  budgetBytes: number;
  bytesPerBlock: number;
  /** How the budget was given. */
  source: "bytes" | "fraction" | "default" | "numBlocks";
  /** MemAvailable when a fraction was resolved. */
  availableBytes: number | null;
  /** true when the budget held more than maxNumSeqs × maxModelLen tokens (more is never used). */
  capped: boolean;
}

export class KvBudgetError extends Error {
  override name = "KvBudgetError";
}

/**
 * The number of KV blocks for a budget. An explicit numBlocks wins (tests); otherwise the budget
 * (default: min(25% of available, 4 GiB)) divided by the bytes per block, capped at what
 * maxNumSeqs sequences of maxModelLen tokens could ever use.
 */
export function planKvCache(o: {
  shape: Pick<LlamaShape, "layers" | "kvHeads" | "headDim">;
  dtypeBytes: number;
  blockSize?: number;
  maxNumSeqs: number;
  maxModelLen: number;
  budget?: KvBudget;
  numBlocks?: number;
  available?: () => number;
}): KvPlan {
  const blockSize = o.blockSize ?? 16;
  const perBlock = kvBytesPerBlock(o.shape, blockSize, o.dtypeBytes);
  const plan = (numBlocks: number, budgetBytes: number, source: KvPlan["source"], availableBytes: number | null, capped: boolean) => ({
    numBlocks,
    blockSize,
    tokens: numBlocks * blockSize,
    bytes: numBlocks * perBlock,
    budgetBytes,
    bytesPerBlock: perBlock,
    source,
    availableBytes,
    capped,
  });
  if (o.numBlocks !== undefined) return plan(o.numBlocks, o.numBlocks * perBlock, "numBlocks", null, false);
  let budgetBytes: number, availableBytes: number | null = null, source: KvPlan["source"];
  if (o.budget && "bytes" in o.budget) {
    budgetBytes = o.budget.bytes;
    source = "bytes";
  } else {
    availableBytes = (o.available ?? memAvailable)();
    const f = o.budget?.fraction ?? DEFAULT_KV_FRACTION;
    budgetBytes = Math.floor(availableBytes * f);
    source = o.budget ? "fraction" : "default";
    if (!o.budget) budgetBytes = Math.min(budgetBytes, DEFAULT_KV_CAP_BYTES);
  }
  const fit = Math.floor(budgetBytes / perBlock);
  if (fit < 1) {
    throw new KvBudgetError(
      `a KV cache budget of ${budgetBytes} bytes holds no block (one block of ${blockSize} tokens takes ${perBlock} bytes)`,
    );
  }
  const useful = Math.ceil((o.maxNumSeqs * o.maxModelLen) / blockSize);
  return plan(Math.min(fit, useful), budgetBytes, source, availableBytes, fit > useful);
}
