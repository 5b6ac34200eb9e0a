// protocol.ts — the messages between the HTTP thread (host.ts) and the engine worker (worker.ts).
// The main thread only does HTTP, tokenization and bookkeeping; the worker owns the native
// library, the model, the KV cache, the adapter cache and the engine's step loop.
import type { GenerateEvent, StepInfo } from "../engine/engine.ts";
import type { SamplingParams } from "../engine/sampling.ts";
import type { StoppingParams } from "../engine/sequence.ts";
import type { GrammarSpec } from "../engine/grammar.ts";
import type { LlamaShape } from "../model/llama.ts";
import type { MemoryReport } from "../model/loader.ts";
import type { TrainingOptions } from "./training.ts";
import type { KvBudget, KvPlan } from "./kv_budget.ts";
import type { PlanModel } from "./memory_plan.ts";

export interface WorkerInit {
  modelDir: string;
  modelId: string;
  quant: "nf4" | "fp4" | "int4" | "none";
  activations?: "f32" | "bf16";
  threads: number;
  maxNumSeqs: number;
  /** Tokens computed in one step (decodes + prompt chunks); default: the engine's. */
  maxBatchedTokens?: number;
  maxModelLen?: number;
  /** KV cache blocks, an explicit override (tests); otherwise they follow from kvCacheMemory. */
  numBlocks?: number;
  /** The KV cache budget (default: min(25% of MemAvailable after loading, 4 GiB)). */
  kvCacheMemory?: KvBudget;
  /** Folder of the quantized-base cache (<data>/quantized); absent: quantize at every start. */
  quantizedCacheDir?: string;
  adapterBudgetBytes: number;
  /** Fine-tuning jobs run in the worker, on the served base (absent: no training). */
  training?: TrainingOptions;
}

export interface WorkerGenerate {
  promptIds: number[];
  sampling: Partial<SamplingParams>;
  stopping: Partial<StoppingParams>;
  adapter: { uid: string; dir: string } | null;
  /** Top alternatives per prompt token (0-20): the first token event carries the prompt's logprobs. */
  promptLogprobs?: number | null;
  /** Whose request it is: the scheduler admits waiting requests fairly across tenants. */
  tenant?: string;
  /** The tenant's weight (keys file): its share of the batch against other tenants'. */
  tenantWeight?: number;
  includeStopString?: boolean;
  skipSpecialTokens?: boolean;
  /** The grammar the output must follow, compiled (and cached) in the worker; `param` names the
   * request field a grammar that does not compile is blamed on. */
  grammar?: { spec: GrammarSpec; param: string } | null;
}

export type ToWorker =
  | { t: "init"; init: WorkerInit }
  | { t: "generate"; id: number; req: WorkerGenerate }
  | { t: "cancel"; id: number }
  | { t: "adapter_load"; rpc: number; uid: string; dir: string }
  | { t: "adapter_unload"; rpc: number; uid: string }
  | { t: "shutdown"; rpc: number }
  | { t: "jobs_poke" }
  /** Compiles a grammar ahead of use (benchmarks: first use vs cached); answers its milliseconds. */
  | { t: "grammar_compile"; rpc: number; spec: GrammarSpec }
  /** The milliseconds and count of next-token masks computed so far (benchmarks). */
  | { t: "grammar_stats"; rpc: number }
  | { t: "publish_done"; rpc: number; ok: boolean; message?: string };

export interface ModelInfo {
  id: string;
  backend: string;
  backendInfo: Record<string, unknown>;
  shape: LlamaShape;
  maxModelLen: number;
  quant: string;
  memory: MemoryReport;
  /** The model as the memory planner sees it (POST /v1/memory/plan). */
  planModel: PlanModel;
  /** How the KV cache was sized. */
  kv: KvPlan;
  maxNumSeqs: number;
  eosTokenIds: number[];
}

export interface EngineStats {
  running: number;
  waiting: number;
  runningAdapters: string[]; // uids
  waitingAdapters: string[];
  residentAdapters: number;
  residentUids: string[];
  kvUsage: number;
  residentBytes: number;
  adapterLoads: number;
  adapterEvictions: number;
}

export type FromWorker =
  | { t: "ready"; info: ModelInfo }
  | { t: "init_error"; message: string }
  | { t: "event"; id: number; ev: GenerateEvent }
  | { t: "fail"; id: number; message: string; code: string; param?: string | null }
  | { t: "step"; step: StepInfo; stats: EngineStats }
  /** Stats that changed outside a step (a cancel when no step follows), so /health never goes stale. */
  | { t: "stats"; stats: EngineStats }
  | { t: "rpc"; rpc: number; ok: boolean; result?: unknown; message?: string; code?: string }
  | { t: "publish"; rpc: number; tenant: string; id: string; dir: string }
  | { t: "log"; entry: Record<string, unknown> };
