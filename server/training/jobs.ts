// jobs.ts — fine-tuning jobs (OpenAI's /v1/fine_tuning/jobs): hyperparameters resolved and
// checked, a queue that runs one job at a time, statuses (validating_files → queued → running →
// succeeded | failed | cancelled), events (metrics per step, messages), checkpoints (atomic PEFT
// folders, registered as servable models `ft:<base>:<suffix>:<job id>:ckpt-step-<N>`, the result
// as `ft:<base>:<suffix>:<job id>`), cancel, and resume after a crash or restart from the last
// checkpoint (optimizer state included) — or failure with the reason. Everything is scoped to the
// tenant that made it.
//
// The runner does not load models: a BaseProvider hands it the base (context, frozen model,
// tokenizer) to train on — the one the server serves, when the lead wires it so — and it keeps
// its own LoRA weights and optimizer. Training shares the compute: the trainer yields to the event
// loop between micro-batches, and after each step the runner sleeps so that training takes about
// `computeShare` of the wall time.
import { setTimeout as sleep } from "node:timers/promises";
import type { Context } from "../ffi/tensor.ts";
import type { OptimizerKindName } from "../ffi/optim.ts";
import { type LlamaModel, LORA_MODULES, type LoraModule } from "../model/llama.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { openModel } from "../model/bundle.ts";
import { newId, nowSeconds, type Store } from "../store/db.ts";
import { type Caller, ClientError, type FileStore } from "../store/files.ts";
import { DatasetError, parseJsonl, type TokenizedExample, tokenizeExample } from "./dataset.ts";
import { type StepEvent, Trainer, type TrainerState, type TrainHyper } from "./trainer.ts";
import { isResumable, loadCheckpoint, writeCheckpoint } from "./checkpoints.ts";

export type JobStatus = "validating_files" | "queued" | "running" | "succeeded" | "failed" | "cancelled";
export const TERMINAL: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

/** What the API accepts (OpenAI's three, then our extensions); absent = default. */
export interface HyperparametersInput {
  n_epochs?: number | "auto";
  batch_size?: number | "auto";
  learning_rate_multiplier?: number | "auto";
  learning_rate?: number;
  lora_r?: number;
  lora_alpha?: number;
  lora_dropout?: number;
  target_modules?: string[] | "all-linear";
  use_rslora?: boolean;
  warmup_ratio?: number;
  lr_scheduler?: "linear" | "cosine" | "constant";
  max_grad_norm?: number;
  gradient_accumulation_steps?: number;
  max_seq_len?: number;
  packing?: boolean;
  train_on_inputs?: boolean;
  optimizer?: OptimizerKindName;
  quant?: "nf4" | "none";
  full_finetune?: boolean;
  weight_decay?: number;
  checkpoint_every?: number | "auto";
}

/** Every hyperparameter resolved (what the job runs with and shows). */
export interface Hyperparameters {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
  learning_rate: number;
  lora_r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: LoraModule[];
  use_rslora: boolean;
  warmup_ratio: number;
  lr_scheduler: "linear" | "cosine" | "constant";
  max_grad_norm: number;
  gradient_accumulation_steps: number;
  max_seq_len: number;
  packing: boolean;
  train_on_inputs: boolean;
  optimizer: OptimizerKindName;
  quant: "nf4" | "none";
  full_finetune: boolean;
  weight_decay: number;
  /** Steps between checkpoints; 0 = about 5 per job. */
  checkpoint_every: number;
}

export const BASE_LEARNING_RATE = 2e-4;

export interface CreateJobRequest {
  model: string;
  training_file: string;
  validation_file?: string | null;
  suffix?: string | null;
  seed?: number | null;
  metadata?: Record<string, string> | null;
  hyperparameters?: HyperparametersInput;
}

export interface JobError {
  code: string;
  message: string;
  param: string | null;
}

export interface JobRecord {
  id: string;
  tenant: string;
  model: string;
  trainingFile: string;
  validationFile: string | null;
  suffix: string | null;
  seed: number;
  metadata: Record<string, string> | null;
  hyper: Hyperparameters;
  status: JobStatus;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: JobError | null;
  fineTunedModel: string | null;
  trainedTokens: number | null;
  step: number;
  totalSteps: number | null;
}

export interface JobEvent {
  id: string;
  jobId: string;
  createdAt: number;
  level: "info" | "warn" | "error";
  type: "message" | "metrics";
  message: string;
  data: Record<string, unknown> | null;
}

export interface CheckpointRecord {
  id: string;
  jobId: string;
  step: number;
  createdAt: number;
  modelId: string;
  dir: string;
  metrics: Record<string, number>;
  final: boolean;
}

/** The frozen base a job trains on. */
export interface TrainingBase {
  id: string;
  ctx: Context;
  model: LlamaModel;
  tokenizer: Tokenizer;
  eosTokenIds: number[];
  maxModelLen: number;
}

/** Hands out the base models jobs may train on (dependency injection: the server decides
 * whether the serving engine's base is shared). */
export interface BaseProvider {
  /** Ids of the models a job may name. */
  models(): string[];
  /** The quant settings it can give (`nf4`: QLoRA on the 4-bit base; `none`: 16/32-bit LoRA). */
  quants(): ("nf4" | "none")[];
  /** Largest sequence the model takes. */
  maxModelLen(model: string): number;
  acquire(model: string, quant: "nf4" | "none"): Promise<TrainingBase>;
  release?(base: TrainingBase): void;
}

/** Makes fine-tuned models servable (the adapter registry, in the server). */
export interface ModelPublisher {
  publish(tenant: string, id: string, dir: string): Promise<void>;
  unpublish?(tenant: string, id: string): Promise<void>;
}

export interface JobRunnerOptions {
  store: Store;
  files: FileStore;
  /** Checkpoint folders go under `${checkpointDir}/<tenant>/<job id>/`. */
  checkpointDir: string;
  bases: BaseProvider;
  publisher?: ModelPublisher | null;
  /** Fraction of wall time training may take while it runs, in (0, 1] (default 1). */
  computeShare?: number;
  /** Bytes of optimizer state kept resident by the paged optimizers (0 = no limit). */
  optimizerBudgetBytes?: number;
  /** Start working at once (default true); false: call start(). */
  autoStart?: boolean;
  log?: ((entry: Record<string, unknown>) => void) | null;
  /** Called after each checkpoint is durable and recorded (monitoring, tests). */
  onCheckpoint?: ((jobId: string, step: number, final: boolean) => void) | null;
  /** Called when a job was created here, so that a runner in another thread can be woken. */
  onQueued?: (() => void) | null;
}

interface JobRow {
  id: string;
  tenant: string;
  model: string;
  training_file: string;
  validation_file: string | null;
  suffix: string | null;
  seed: number;
  metadata: string | null;
  hyper: string;
  status: JobStatus;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  error: string | null;
  fine_tuned_model: string | null;
  trained_tokens: number | null;
  step: number;
  total_steps: number | null;
}

const toJob = (r: JobRow): JobRecord => ({
  id: r.id,
  tenant: r.tenant,
  model: r.model,
  trainingFile: r.training_file,
  validationFile: r.validation_file,
  suffix: r.suffix,
  seed: Number(r.seed),
  metadata: r.metadata ? JSON.parse(r.metadata) : null,
  hyper: JSON.parse(r.hyper),
  status: r.status,
  createdAt: Number(r.created_at),
  startedAt: r.started_at === null ? null : Number(r.started_at),
  finishedAt: r.finished_at === null ? null : Number(r.finished_at),
  error: r.error ? JSON.parse(r.error) : null,
  fineTunedModel: r.fine_tuned_model,
  trainedTokens: r.trained_tokens === null ? null : Number(r.trained_tokens),
  step: Number(r.step),
  totalSteps: r.total_steps === null ? null : Number(r.total_steps),
});

const HP = "method.supervised.hyperparameters";

function bad(field: string, message: string): ClientError {
  return new ClientError(400, `${field}: ${message}`, "invalid_value", `${HP}.${field}`);
}

function num(v: unknown, field: string, lo: number, hi: number, opts: { int?: boolean; loOpen?: boolean; hiOpen?: boolean } = {}): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw bad(field, "must be a number");
  if (opts.int && !Number.isInteger(v)) throw bad(field, "must be an integer");
  const okLo = opts.loOpen ? v > lo : v >= lo, okHi = opts.hiOpen ? v < hi : v <= hi;
  if (!okLo || !okHi) throw bad(field, `must be in ${opts.loOpen ? "(" : "["}${lo}, ${hi}${opts.hiOpen ? ")" : "]"} (got ${v})`);
  return v;
}

const KNOWN_HYPER = new Set([
  "n_epochs",
  "batch_size",
  "learning_rate_multiplier",
  "learning_rate",
  "lora_r",
  "lora_alpha",
  "lora_dropout",
  "target_modules",
  "use_rslora",
  "warmup_ratio",
  "lr_scheduler",
  "max_grad_norm",
  "gradient_accumulation_steps",
  "max_seq_len",
  "packing",
  "train_on_inputs",
  "optimizer",
  "quant",
  "full_finetune",
  "weight_decay",
  "checkpoint_every",
]);

/**
 * Resolves the hyperparameters ("auto" and absent → defaults) and checks every range; errors
 * name the field. `examples` (training examples) sizes "auto" batch sizes.
 */
export function resolveHyperparameters(
  h: HyperparametersInput,
  ctx: { examples: number; maxModelLen: number; quants: ("nf4" | "none")[] },
): Hyperparameters {
  for (const k of Object.keys(h)) if (!KNOWN_HYPER.has(k)) throw bad(k, "unknown hyperparameter");
  const bool = (v: unknown, field: string, dflt: boolean): boolean => {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") throw bad(field, "must be true or false");
    return v;
  };
  const oneOf = <T extends string>(v: unknown, field: string, options: readonly T[], dflt: T): T => {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "string" || !(options as readonly string[]).includes(v)) {
      throw bad(field, `must be one of ${options.join(", ")} (got ${JSON.stringify(v)})`);
    }
    return v as T;
  };
  const auto = <T>(v: unknown, dflt: T, parse: (x: unknown) => T): T => (v === undefined || v === null || v === "auto" ? dflt : parse(v));

  const full = bool(h.full_finetune, "full_finetune", false);
  if (full) {
    throw bad(
      "full_finetune",
      "full fine-tuning is not supported by this server: it trains LoRA adapters on a frozen base (set full_finetune to false)",
    );
  }
  const quant = oneOf(h.quant, "quant", ["nf4", "none"] as const, "nf4");
  if (!ctx.quants.includes(quant)) {
    throw bad("quant", `quant "${quant}" is not available on this server (available: ${ctx.quants.join(", ")})`);
  }
  let targets: LoraModule[];
  if (h.target_modules === undefined || h.target_modules === null || h.target_modules === "all-linear") targets = [...LORA_MODULES];
  else if (Array.isArray(h.target_modules)) {
    if (h.target_modules.length === 0) throw bad("target_modules", "must name at least one module");
    for (const m of h.target_modules) {
      if (!(LORA_MODULES as readonly string[]).includes(m)) {
        throw bad("target_modules", `unknown module ${JSON.stringify(m)} (modules: ${LORA_MODULES.join(", ")}, or "all-linear")`);
      }
    }
    if (new Set(h.target_modules).size !== h.target_modules.length) throw bad("target_modules", "names a module twice");
    targets = LORA_MODULES.filter((m) => (h.target_modules as string[]).includes(m));
  } else throw bad("target_modules", `must be a list of module names or "all-linear"`);
  const batch = auto(h.batch_size, Math.max(1, Math.min(4, ctx.examples)), (v) => num(v, "batch_size", 1, 256, { int: true }));
  const mult = auto(h.learning_rate_multiplier, 1, (v) => num(v, "learning_rate_multiplier", 0, 10, { loOpen: true }));
  const lr = h.learning_rate === undefined || h.learning_rate === null
    ? BASE_LEARNING_RATE
    : num(h.learning_rate, "learning_rate", 0, 1, { loOpen: true });
  const r = h.lora_r === undefined || h.lora_r === null ? 16 : num(h.lora_r, "lora_r", 1, 1024, { int: true });
  const maxSeq = h.max_seq_len === undefined || h.max_seq_len === null
    ? Math.min(1024, ctx.maxModelLen)
    : num(h.max_seq_len, "max_seq_len", 8, ctx.maxModelLen, { int: true });
  return {
    n_epochs: auto(h.n_epochs, 3, (v) => num(v, "n_epochs", 1, 50, { int: true })),
    batch_size: batch,
    learning_rate_multiplier: mult,
    learning_rate: lr * mult,
    lora_r: r,
    lora_alpha: h.lora_alpha === undefined || h.lora_alpha === null ? 2 * r : num(h.lora_alpha, "lora_alpha", 0, 4096, { loOpen: true }),
    lora_dropout: h.lora_dropout === undefined || h.lora_dropout === null
      ? 0.05
      : num(h.lora_dropout, "lora_dropout", 0, 1, { hiOpen: true }),
    target_modules: targets,
    use_rslora: bool(h.use_rslora, "use_rslora", false),
    warmup_ratio: h.warmup_ratio === undefined || h.warmup_ratio === null
      ? 0.03
      : num(h.warmup_ratio, "warmup_ratio", 0, 1, { hiOpen: true }),
    lr_scheduler: oneOf(h.lr_scheduler, "lr_scheduler", ["linear", "cosine", "constant"] as const, "linear"),
    max_grad_norm: h.max_grad_norm === undefined || h.max_grad_norm === null ? 1 : num(h.max_grad_norm, "max_grad_norm", 0, 1e4),
    gradient_accumulation_steps: h.gradient_accumulation_steps === undefined || h.gradient_accumulation_steps === null
      ? 1
      : num(h.gradient_accumulation_steps, "gradient_accumulation_steps", 1, 1024, { int: true }),
    max_seq_len: maxSeq,
    packing: bool(h.packing, "packing", true),
    train_on_inputs: bool(h.train_on_inputs, "train_on_inputs", false),
    optimizer: oneOf(h.optimizer, "optimizer", ["adamw", "paged_adamw", "paged_adamw_8bit"] as const, "paged_adamw"),
    quant,
    full_finetune: false,
    weight_decay: h.weight_decay === undefined || h.weight_decay === null ? 0 : num(h.weight_decay, "weight_decay", 0, 1),
    checkpoint_every: auto(h.checkpoint_every, 0, (v) => num(v, "checkpoint_every", 0, 1e6, { int: true })),
  };
}

/** `ft:<base>:<suffix>:<job id>` (the suffix may be empty, as in OpenAI's names). */
export function fineTunedModelId(base: string, suffix: string | null, jobId: string): string {
  return `ft:${base}:${suffix ?? ""}:${jobId}`;
}

const SUFFIX_RE = /^[A-Za-z0-9._-]{1,64}$/;
/** Adapter ids the registry accepts (server/adapters/registry.ts). */
const MODEL_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$/;

/** How a finished (or stopped) run ended. */
type RunEnd = "succeeded" | "cancelled" | "interrupted";

export class JobRunner {
  readonly store: Store;
  readonly files: FileStore;
  readonly bases: BaseProvider;
  readonly publisher: ModelPublisher | null;
  readonly checkpointDir: string;
  computeShare: number;
  readonly optimizerBudgetBytes: number;
  readonly #log: ((entry: Record<string, unknown>) => void) | null;
  readonly #onCheckpoint: JobRunnerOptions["onCheckpoint"];
  readonly #onQueued: JobRunnerOptions["onQueued"];
  #started = false;
  #stopping = false;
  #loop: Promise<void> | null = null;
  #wake = false;
  #cancel = new Set<string>();
  #running: string | null = null;
  /** Peak optimizer-state bytes resident in the last run (for the bench and tests). */
  lastOptimizerMemory: { total: number; resident: number; peakResident: number } | null = null;
  /** Milliseconds spent training (steps) and yielding to serving (the compute share's sleeps). */
  readonly usage = { trainMs: 0, yieldedMs: 0 };

  constructor(o: JobRunnerOptions) {
    this.store = o.store;
    this.files = o.files;
    this.bases = o.bases;
    this.publisher = o.publisher ?? null;
    this.checkpointDir = o.checkpointDir.replace(/\/+$/, "");
    const share = o.computeShare ?? 1;
    if (!(share > 0 && share <= 1)) throw new RangeError("computeShare must be in (0, 1]");
    this.computeShare = share;
    this.optimizerBudgetBytes = o.optimizerBudgetBytes ?? 0;
    this.#log = o.log ?? null;
    this.#onCheckpoint = o.onCheckpoint ?? null;
    this.#onQueued = o.onQueued ?? null;
    if (o.autoStart ?? true) void this.start();
  }

  /** The job running now, if any. */
  get runningJob(): string | null {
    return this.#running;
  }

  /**
   * Recovers after a restart (jobs left running resume from their last checkpoint, or fail with
   * the reason), publishes the finished jobs' models again, and starts the queue.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#stopping = false;
    // first, synchronously: nothing can have started running on this runner yet
    for (const r of this.store.all<JobRow>("SELECT * FROM jobs WHERE status = 'running' ORDER BY seq")) {
      this.#event(r.id, "info", "The job was interrupted (server restart); it will resume from its last checkpoint.");
      this.store.run("UPDATE jobs SET status = 'queued' WHERE id = ?", r.id);
    }
    this.#kick();
    for (const r of this.store.all<JobRow>("SELECT * FROM jobs WHERE status = 'succeeded' ORDER BY seq")) await this.#publishJob(toJob(r));
  }

  /** Stops after the current micro-batch, leaving a running job as it is in the database, as a
   * crash would (it resumes on the next start). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#kick();
    await this.#loop;
    this.#started = false;
  }

  // -------------------------------------------------------------------------------- API side

  create(caller: Caller, req: CreateJobRequest): JobRecord {
    if (!this.bases.models().includes(req.model)) {
      throw new ClientError(
        400,
        `model "${req.model}" cannot be fine-tuned here (models: ${this.bases.models().join(", ")})`,
        "model_not_found",
        "model",
      );
    }
    const train = this.files.get(caller, req.training_file);
    if (!train) throw new ClientError(400, `training_file: no file with id "${req.training_file}"`, "invalid_file", "training_file");
    if (train.purpose !== "fine-tune") {
      throw new ClientError(
        400,
        `training_file: file "${train.id}" has purpose "${train.purpose}", not "fine-tune"`,
        "invalid_file",
        "training_file",
      );
    }
    if (req.validation_file) {
      const v = this.files.get(caller, req.validation_file);
      if (!v) throw new ClientError(400, `validation_file: no file with id "${req.validation_file}"`, "invalid_file", "validation_file");
      if (v.purpose !== "fine-tune") {
        throw new ClientError(
          400,
          `validation_file: file "${v.id}" has purpose "${v.purpose}", not "fine-tune"`,
          "invalid_file",
          "validation_file",
        );
      }
    }
    if (req.suffix !== undefined && req.suffix !== null && !SUFFIX_RE.test(req.suffix)) {
      throw new ClientError(400, "suffix: 1-64 characters of letters, digits, '.', '_', '-'", "invalid_value", "suffix");
    }
    // the longest model id this job will make must be a valid adapter id (the registry's rule)
    const longest = `${fineTunedModelId(req.model, req.suffix ?? null, "ftjob-" + "x".repeat(24))}:ckpt-step-9999999`;
    if (!MODEL_ID_RE.test(longest)) {
      throw new ClientError(
        400,
        `suffix: the fine-tuned model ids (${longest.length} characters with a checkpoint's) must be at most 128 of letters, digits, '.', '_', ':', '-'`,
        "invalid_value",
        "suffix",
      );
    }
    const seed = req.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (!Number.isInteger(seed) || seed < 0 || seed > 2 ** 31 - 1) {
      throw new ClientError(400, "seed: an integer in [0, 2147483647]", "invalid_value", "seed");
    }
    const hyper = resolveHyperparameters(req.hyperparameters ?? {}, {
      examples: train.examples,
      maxModelLen: this.bases.maxModelLen(req.model),
      quants: this.bases.quants(),
    });
    const id = newId("ftjob");
    this.store.run(
      `INSERT INTO jobs (id, tenant, model, training_file, validation_file, suffix, seed, metadata, method, hyper, status, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'validating_files', ?)`,
      id,
      caller.tenant,
      req.model,
      train.id,
      req.validation_file ?? null,
      req.suffix ?? null,
      seed,
      req.metadata ? JSON.stringify(req.metadata) : null,
      JSON.stringify({ type: "supervised" }),
      JSON.stringify(hyper),
      nowSeconds(),
    );
    this.#event(id, "info", `Created fine-tuning job: ${id}`);
    this.#kick();
    this.#onQueued?.();
    return this.get(caller, id)!;
  }

  get(caller: Caller, id: string): JobRecord | undefined {
    const r = caller.admin
      ? this.store.get<JobRow>("SELECT * FROM jobs WHERE id = ?", id)
      : this.store.get<JobRow>("SELECT * FROM jobs WHERE id = ? AND tenant = ?", id, caller.tenant);
    return r ? toJob(r) : undefined;
  }

  require(caller: Caller, id: string): JobRecord {
    const j = this.get(caller, id);
    if (!j) throw new ClientError(404, `no fine-tuning job with id "${id}"`, "job_not_found", "fine_tuning_job_id");
    return j;
  }

  /** Newest first; `after` is the last job id of the previous page. */
  list(
    caller: Caller,
    opts: { after?: string; limit?: number; metadata?: Record<string, string> } = {},
  ): { data: JobRecord[]; hasMore: boolean } {
    const limit = Math.max(1, Math.min(opts.limit ?? 20, 100));
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (!caller.admin) {
      where.push("tenant = ?");
      params.push(caller.tenant);
    }
    if (opts.after) {
      const a = this.get(caller, opts.after);
      if (!a) throw new ClientError(400, `after: no fine-tuning job with id "${opts.after}"`, "invalid_value", "after");
      where.push("seq < (SELECT seq FROM jobs WHERE id = ?)");
      params.push(a.id);
    }
    for (const [k, v] of Object.entries(opts.metadata ?? {})) {
      where.push("json_extract(metadata, ?) = ?");
      params.push(`$."${k.replace(/"/g, "")}"`, v);
    }
    const rows = this.store.all<JobRow>(
      `SELECT * FROM jobs ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY seq DESC LIMIT ?`,
      ...params,
      limit + 1,
    );
    return { data: rows.slice(0, limit).map(toJob), hasMore: rows.length > limit };
  }

  /** Cancels a job that has not finished (a running one stops after its current micro-batch). */
  cancel(caller: Caller, id: string): JobRecord {
    const job = this.require(caller, id);
    if (TERMINAL.includes(job.status)) {
      throw new ClientError(409, `the job is already ${job.status}`, "job_not_cancellable", "fine_tuning_job_id");
    }
    // A running job may be trained by a runner in another thread (the engine worker): the
    // request goes through the database, which that runner reads between micro-batches.
    if (this.#running === job.id || job.status === "running") {
      this.#cancel.add(job.id);
      this.store.run("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", job.id);
      this.#event(job.id, "info", "Cancellation requested; the job stops after its current micro-batch.");
    } else {
      this.#finish(job.id, "cancelled", null);
      this.#event(job.id, "info", "The job was cancelled.");
    }
    return this.get(caller, id)!;
  }

  /** Newest first; `after` is the last event id of the previous page. */
  events(caller: Caller, id: string, opts: { after?: string; limit?: number } = {}): { data: JobEvent[]; hasMore: boolean } {
    const job = this.require(caller, id);
    const limit = Math.max(1, Math.min(opts.limit ?? 20, 1000));
    const params: (string | number)[] = [job.id];
    let cond = "";
    if (opts.after) {
      const e = this.store.get("SELECT seq FROM job_events WHERE id = ? AND job_id = ?", opts.after, job.id);
      if (!e) throw new ClientError(400, `after: no event with id "${opts.after}" in this job`, "invalid_value", "after");
      cond = " AND seq < ?";
      params.push(Number(e.seq));
    }
    const rows = this.store.all<Record<string, unknown>>(
      `SELECT * FROM job_events WHERE job_id = ?${cond} ORDER BY seq DESC LIMIT ?`,
      ...params,
      limit + 1,
    );
    return {
      data: rows.slice(0, limit).map((r) => ({
        id: String(r.id),
        jobId: String(r.job_id),
        createdAt: Number(r.created_at),
        level: r.level as JobEvent["level"],
        type: r.type as JobEvent["type"],
        message: String(r.message),
        data: r.data ? JSON.parse(String(r.data)) : null,
      })),
      hasMore: rows.length > limit,
    };
  }

  /** Newest first. */
  checkpoints(caller: Caller, id: string, opts: { after?: string; limit?: number } = {}): { data: CheckpointRecord[]; hasMore: boolean } {
    const job = this.require(caller, id);
    const limit = Math.max(1, Math.min(opts.limit ?? 10, 100));
    const params: (string | number)[] = [job.id];
    let cond = "";
    if (opts.after) {
      const c = this.store.get("SELECT seq FROM job_checkpoints WHERE id = ? AND job_id = ?", opts.after, job.id);
      if (!c) throw new ClientError(400, `after: no checkpoint with id "${opts.after}" in this job`, "invalid_value", "after");
      cond = " AND seq < ?";
      params.push(Number(c.seq));
    }
    const rows = this.store.all(
      `SELECT * FROM job_checkpoints WHERE job_id = ?${cond} ORDER BY step DESC, seq DESC LIMIT ?`,
      ...params,
      limit + 1,
    );
    return { data: rows.slice(0, limit).map(toCheckpoint), hasMore: rows.length > limit };
  }

  /** Resolves when the job reaches one of the statuses (polling; for tests and scripts). */
  async waitFor(id: string, statuses: readonly JobStatus[] = TERMINAL, timeoutMs = 120_000): Promise<JobRecord> {
    const t0 = Date.now();
    while (true) {
      const r = this.store.get<JobRow>("SELECT * FROM jobs WHERE id = ?", id);
      if (!r) throw new Error(`no job ${id}`);
      if (statuses.includes(r.status)) return toJob(r);
      if (Date.now() - t0 > timeoutMs) throw new Error(`job ${id} is still ${r.status} after ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** Starts work on jobs created by another runner on the same database (another thread). */
  poke(): void {
    this.#kick();
  }

  /** A cancel asked here, or through the database by a runner in another thread. */
  #cancelRequested(id: string): boolean {
    if (this.#cancel.has(id)) return true;
    const r = this.store.get<{ cancel_requested: number }>("SELECT cancel_requested FROM jobs WHERE id = ?", id);
    if (r && Number(r.cancel_requested) === 1) this.#cancel.add(id);
    return this.#cancel.has(id);
  }

  // -------------------------------------------------------------------------------- the queue

  #kick(): void {
    this.#wake = true;
    if (this.#loop || !this.#started) return;
    this.#loop = this.#work().finally(() => {
      this.#loop = null;
      if (this.#wake && this.#started && !this.#stopping) this.#kick();
    });
  }

  async #work(): Promise<void> {
    while (!this.#stopping) {
      this.#wake = false;
      // validate waiting jobs first (cheap), then run the oldest queued one
      for (const r of this.store.all<JobRow>("SELECT * FROM jobs WHERE status = 'validating_files' ORDER BY seq")) {
        await this.#validate(toJob(r));
      }
      const next = this.store.get<JobRow>("SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1");
      if (!next) {
        if (!this.#wake) return;
        continue;
      }
      await this.#run(toJob(next));
    }
  }

  async #validate(job: JobRecord): Promise<void> {
    for (const [param, fid] of [["training_file", job.trainingFile], ["validation_file", job.validationFile]] as const) {
      if (!fid) continue;
      const text = await this.files.textById(fid);
      if (text === null) {
        this.#fail(job.id, { code: "invalid_file", message: `${param} ${fid} no longer exists`, param });
        return;
      }
      try {
        parseJsonl(text);
      } catch (e) {
        this.#fail(job.id, { code: "invalid_file", message: `${param} ${fid}: ${(e as Error).message}`, param });
        return;
      }
    }
    this.store.run("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'validating_files'", job.id);
    this.#event(job.id, "info", "Validated training file(s); the job is queued.");
  }

  #jobDir(job: JobRecord): string {
    return `${this.checkpointDir}/${encodeURIComponent(job.tenant)}/${job.id}`;
  }

  async #run(job: JobRecord): Promise<void> {
    this.#running = job.id;
    const resumeFrom = this.store.all("SELECT * FROM job_checkpoints WHERE job_id = ? AND final = 0 ORDER BY step DESC", job.id).map(
      toCheckpoint,
    );
    this.store.run("UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?) WHERE id = ?", nowSeconds(), job.id);
    let base: TrainingBase | null = null;
    let trainer: Trainer | null = null;
    try {
      base = await this.bases.acquire(job.model, job.hyper.quant);
      const h = job.hyper;
      const eos = base.eosTokenIds[0] ?? null;
      const load = async (fid: string, param: string): Promise<TokenizedExample[]> => {
        const text = await this.files.textById(fid);
        if (text === null) throw new JobFailure({ code: "invalid_file", message: `${param} ${fid} no longer exists`, param });
        try {
          return parseJsonl(text).map((e) => tokenizeExample(base!.tokenizer, e, { trainOnInputs: h.train_on_inputs, eosTokenId: eos }));
        } catch (e) {
          if (e instanceof DatasetError) throw new JobFailure({ code: "invalid_file", message: `${param} ${fid}: ${e.message}`, param });
          throw e;
        }
      };
      const train = await load(job.trainingFile, "training_file");
      const validation = job.validationFile ? await load(job.validationFile, "validation_file") : null;
      const jobDir = this.#jobDir(job);
      await Deno.mkdir(`${jobDir}/spill`, { recursive: true });
      // a checkpoint folder that a crash left half-written was never renamed into place: remove it
      for await (const d of Deno.readDir(jobDir)) {
        if (d.name.startsWith(".") && d.name.includes(".tmp-")) {
          await Deno.remove(`${jobDir}/${d.name}`, { recursive: true }).catch(() => {});
        }
      }
      const hyper: TrainHyper = {
        nEpochs: h.n_epochs,
        batchSize: h.batch_size,
        learningRate: h.learning_rate,
        loraR: h.lora_r,
        loraAlpha: h.lora_alpha,
        loraDropout: h.lora_dropout,
        targetModules: h.target_modules,
        useRslora: h.use_rslora,
        warmupRatio: h.warmup_ratio,
        lrScheduler: h.lr_scheduler,
        maxGradNorm: h.max_grad_norm,
        gradientAccumulationSteps: h.gradient_accumulation_steps,
        maxSeqLen: h.max_seq_len,
        packing: h.packing,
        weightDecay: h.weight_decay,
        optimizer: h.optimizer,
        optimizerBudgetBytes: h.optimizer === "adamw" ? 0 : this.optimizerBudgetBytes,
        seed: job.seed,
        checkpointEvery: 0, // set below, once the number of steps is known
        evalEvery: 0,
      };
      trainer = new Trainer(base.ctx, base.model, hyper, h.optimizer === "adamw" ? null : `${jobDir}/spill`);
      const total = trainer.totalSteps(train);
      (hyper as { checkpointEvery: number }).checkpointEvery = h.checkpoint_every > 0
        ? h.checkpoint_every
        : Math.max(1, Math.ceil(total / 5));
      const trainedTokens = train.reduce((s, e) => s + Math.min(e.ids.length, h.max_seq_len), 0) * h.n_epochs;
      this.store.run("UPDATE jobs SET total_steps = ?, trained_tokens = ? WHERE id = ?", total, trainedTokens, job.id);

      // resume from the newest checkpoint that is complete and loads (older ones if it does not)
      if (resumeFrom.length > 0) {
        let reason = `the checkpoint at step ${resumeFrom[0].step} is missing or incomplete`;
        let resumed = false;
        for (const ck of resumeFrom.filter((c) => c.step <= total)) {
          if (!(await isResumable(ck.dir))) continue;
          try {
            trainer.step = await loadCheckpoint(ck.dir, trainer.state, base.model.shape);
            resumed = true;
            break;
          } catch (e) {
            if (ck === resumeFrom[0]) reason = `the checkpoint at step ${ck.step} does not load: ${(e as Error).message}`;
          }
        }
        if (!resumed) throw new JobFailure({ code: "resume_failed", message: `cannot resume: ${reason}`, param: null });
        // the interrupted run's metrics after the checkpoint are redone
        this.store.run(
          "DELETE FROM job_events WHERE job_id = ? AND type = 'metrics' AND CAST(json_extract(data, '$.step') AS INTEGER) > ?",
          job.id,
          trainer.step,
        );
        this.#event(job.id, "info", `Resumed from the checkpoint at step ${trainer.step} (LoRA weights and optimizer state).`);
      } else if (job.step > 0) {
        this.store.run("DELETE FROM job_events WHERE job_id = ? AND type = 'metrics'", job.id);
        this.#event(job.id, "info", "No checkpoint was written before the interruption; training restarts from step 0.");
      } else {
        this.#event(
          job.id,
          "info",
          `Fine-tuning job started: ${total} steps, ${train.length} examples, ${trainer.lora.numParameters} LoRA parameters.`,
        );
      }

      let lastEnd = performance.now();
      let lastMetrics: Record<string, number> = {};
      const end: RunEnd = await trainer.run(train, validation, {
          onStep: async (e: StepEvent) => {
            const data: Record<string, number> = {
              step: e.step,
              total_steps: e.totalSteps,
              epoch: e.epoch,
              train_loss: e.loss,
              learning_rate: e.lr,
              grad_norm: e.gradNorm,
              tokens_per_second: e.tokensPerSecond,
            };
            if (e.validationLoss !== undefined) data.valid_loss = e.validationLoss;
            lastMetrics = data;
            const msg = `Step ${e.step}/${e.totalSteps}: training loss=${e.loss.toFixed(4)}` +
              (e.validationLoss !== undefined ? `, validation loss=${e.validationLoss.toFixed(4)}` : "");
            this.#event(job.id, "info", msg, "metrics", data);
            this.store.run("UPDATE jobs SET step = ? WHERE id = ?", e.step, job.id);
            // share the compute: sleep so that training takes about computeShare of the time
            const now = performance.now();
            this.usage.trainMs += now - lastEnd;
            if (this.computeShare < 1) {
              const pause = Math.min(10_000, (now - lastEnd) * (1 / this.computeShare - 1));
              this.usage.yieldedMs += pause;
              await sleep(pause);
            }
            lastEnd = performance.now();
          },
          onCheckpoint: (step, final, state) => this.#checkpoint(job, base!, step, final, state, lastMetrics),
          shouldStop: () => this.#stopping || this.#cancelRequested(job.id),
        }) === "completed"
        ? "succeeded"
        : this.#cancel.has(job.id)
        ? "cancelled"
        : "interrupted";
      this.lastOptimizerMemory = trainer.optimizer.memory();
      if (end === "cancelled") {
        this.#finish(job.id, "cancelled", null);
        this.#event(job.id, "info", `The job was cancelled at step ${trainer.step}.`);
      } else if (end === "interrupted") {
        this.#event(job.id, "info", `Training paused at step ${trainer.step} (server stopping); it resumes from the last checkpoint.`);
      }
    } catch (e) {
      const err: JobError = e instanceof JobFailure
        ? e.error
        : { code: "training_failed", message: (e as Error)?.message ?? String(e), param: null };
      this.#log?.({
        ts: new Date().toISOString(),
        level: "error",
        msg: "fine-tuning job failed",
        job: job.id,
        error: String((e as Error)?.stack ?? e),
      });
      this.#fail(job.id, err);
    } finally {
      this.#cancel.delete(job.id);
      trainer?.dispose();
      if (base) this.bases.release?.(base);
      this.#running = null;
    }
  }

  async #checkpoint(
    job: JobRecord,
    base: TrainingBase,
    step: number,
    final: boolean,
    state: TrainerState,
    metrics: Record<string, number>,
  ): Promise<void> {
    const dir = `${this.#jobDir(job)}/${final ? "final" : `step-${step}`}`;
    const info = { baseModel: base.id, hyperparameters: job.hyper as unknown as Record<string, unknown>, withOptimizer: !final };
    await writeCheckpoint(dir, state, info);
    const modelId = fineTunedModelId(job.model, job.suffix, job.id);
    const ckptModel = `${modelId}:ckpt-step-${step}`;
    const ckptId = newId("ftckpt");
    const m = {
      step,
      ...(metrics.train_loss !== undefined ? { train_loss: metrics.train_loss } : {}),
      ...(metrics.valid_loss !== undefined ? { valid_loss: metrics.valid_loss } : {}),
    };
    // servable first, then recorded: a checkpoint (or a succeeded job) that the API lists can be used
    await this.#publish(job.tenant, ckptModel, dir, job.id);
    if (final) await this.#publish(job.tenant, modelId, dir, job.id);
    this.store.transaction(() => {
      this.store.run("DELETE FROM job_checkpoints WHERE job_id = ? AND step = ?", job.id, step);
      this.store.run(
        "INSERT INTO job_checkpoints (id, job_id, step, created_at, model_id, dir, metrics, final) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ckptId,
        job.id,
        step,
        nowSeconds(),
        ckptModel,
        dir,
        JSON.stringify(m),
        final ? 1 : 0,
      );
      if (final) {
        this.#event(job.id, "info", `New fine-tuned model created: ${modelId}`);
        this.#event(job.id, "info", "The job has successfully completed");
        this.store.run(
          "UPDATE jobs SET status = 'succeeded', finished_at = ?, fine_tuned_model = ?, step = ? WHERE id = ? AND status = 'running'",
          nowSeconds(),
          modelId,
          step,
          job.id,
        );
      } else this.#event(job.id, "info", `Checkpoint created at step ${step}: ${ckptModel}`);
    });
    this.#onCheckpoint?.(job.id, step, final);
  }

  async #publish(tenant: string, id: string, dir: string, jobId: string): Promise<void> {
    if (!this.publisher) return;
    try {
      await this.publisher.publish(tenant, id, dir);
    } catch (e) {
      this.#event(jobId, "warn", `could not register ${id} for serving: ${(e as Error).message}`);
    }
  }

  async #publishJob(job: JobRecord): Promise<void> {
    if (!this.publisher) return;
    for (const c of this.store.all("SELECT * FROM job_checkpoints WHERE job_id = ? ORDER BY step", job.id).map(toCheckpoint)) {
      await this.#publish(job.tenant, c.modelId, c.dir, job.id);
      if (c.final && job.fineTunedModel) await this.#publish(job.tenant, job.fineTunedModel, c.dir, job.id);
    }
  }

  #finish(id: string, status: JobStatus, error: JobError | null): void {
    this.store.run(
      "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status NOT IN ('succeeded', 'failed', 'cancelled')",
      status,
      nowSeconds(),
      error ? JSON.stringify(error) : null,
      id,
    );
  }

  #fail(id: string, error: JobError): void {
    this.#finish(id, "failed", error);
    this.#event(id, "error", `The job failed: ${error.message}`);
  }

  #event(
    jobId: string,
    level: JobEvent["level"],
    message: string,
    type: JobEvent["type"] = "message",
    data: Record<string, unknown> | null = null,
  ): void {
    this.store.run(
      "INSERT INTO job_events (id, job_id, created_at, level, type, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
      newId("ftevent"),
      jobId,
      nowSeconds(),
      level,
      type,
      message,
      data ? JSON.stringify(data) : null,
    );
  }
}

class JobFailure extends Error {
  constructor(readonly error: JobError) {
    super(error.message);
  }
}

function toCheckpoint(r: Record<string, unknown>): CheckpointRecord {
  return {
    id: String(r.id),
    jobId: String(r.job_id),
    step: Number(r.step),
    createdAt: Number(r.created_at),
    modelId: String(r.model_id),
    dir: String(r.dir),
    metrics: JSON.parse(String(r.metrics)),
    final: Number(r.final) === 1,
  };
}

// ------------------------------------------------------------------------------------ wiring

/**
 * A BaseProvider over one model folder, loading it on first use (nf4 and/or none) on `ctx` and
 * keeping it. The server may instead hand the runner the base its engine serves.
 */
export function folderBaseProvider(
  ctx: Context,
  dir: string,
  opts: { id?: string; quants?: ("nf4" | "none")[] } = {},
): BaseProvider & { dispose(): Promise<void> } {
  const id = opts.id ?? dir.replace(/\/+$/, "").split("/").pop()!;
  const quants = opts.quants ?? ["nf4", "none"];
  const loaded = new Map<string, Promise<TrainingBase>>();
  let maxLen = 0;
  try {
    const c = JSON.parse(Deno.readTextFileSync(`${dir}/config.json`));
    maxLen = Number(c.max_position_embeddings) || 2048;
  } catch {
    maxLen = 2048;
  }
  return {
    models: () => [id],
    quants: () => quants,
    maxModelLen: () => maxLen,
    acquire(model, quant) {
      if (model !== id) return Promise.reject(new Error(`unknown model ${model}`));
      let p = loaded.get(quant);
      if (!p) {
        p = openModel(ctx, dir, { quant, id }).then((b) => ({
          id,
          ctx,
          model: b.loaded.model,
          tokenizer: b.tokenizer,
          eosTokenIds: b.eosTokenIds,
          maxModelLen: b.maxModelLen,
        }));
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

/**
 * A BaseProvider over a model that is already loaded (e.g. the one the serving engine uses, when
 * the runner lives in the engine's thread): jobs with the bundle's quant train on it directly;
 * other quants go to `fallback` when given (e.g. a folderBaseProvider for quant "none").
 */
export function bundleBaseProvider(
  ctx: Context,
  bundle: { id: string; loaded: { model: LlamaModel; quant: string }; tokenizer: Tokenizer; eosTokenIds: number[]; maxModelLen: number },
  fallback: BaseProvider | null = null,
): BaseProvider {
  // a base in fp4 / int4 is not one of the job quants (nf4 = QLoRA, none = 16/32-bit LoRA)
  const quant: "nf4" | "none" | null = bundle.loaded.quant === "none" ? "none" : bundle.loaded.quant === "nf4" ? "nf4" : null;
  const base: TrainingBase = {
    id: bundle.id,
    ctx,
    model: bundle.loaded.model,
    tokenizer: bundle.tokenizer,
    eosTokenIds: bundle.eosTokenIds,
    maxModelLen: bundle.maxModelLen,
  };
  return {
    models: () => [bundle.id],
    quants: () => [...new Set<"nf4" | "none">([...(quant ? [quant] : []), ...(fallback?.quants() ?? [])])],
    maxModelLen: () => bundle.maxModelLen,
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

/** A ModelPublisher over the adapter registry (server/adapters/registry.ts): the model is
 * registered for the job's tenant. The checkpoint folder must lie under the registry's adapter
 * root (make checkpointDir a folder inside it). */
export function registryPublisher(registry: {
  register(caller: { tenant: string; admin: boolean }, id: string, path: string): Promise<unknown>;
  remove(caller: { tenant: string; admin: boolean }, id: string): Promise<unknown>;
  get(caller: { tenant: string; admin: boolean }, id: string): unknown;
}): ModelPublisher {
  return {
    async publish(tenant, id, dir) {
      const caller = { tenant, admin: false };
      if (registry.get(caller, id)) return; // already registered (a restart of the runner)
      await registry.register({ tenant, admin: true }, id, dir);
    },
    async unpublish(tenant, id) {
      await registry.remove({ tenant, admin: false }, id);
    },
  };
}
