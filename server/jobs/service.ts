// service.ts — fine-tuning jobs for the API (/v1/fine_tuning/jobs): create (the request checked
// and its hyperparameters resolved), list, get, cancel, events, checkpoints — each scoped to the
// caller's tenant. It runs on the HTTP thread on the shared database and never trains: a created
// job waits in the database for the JobRunner (runner.ts, in the engine worker), which `onQueued`
// wakes; a cancel of a running job is a flag there that the runner reads between micro-batches.
import { setTimeout as sleep } from "node:timers/promises";
import type { Store } from "../store/db.ts";
import type { FileRecord, FileStore } from "../store/files.ts";
import { ID_RE as ADAPTER_ID_RE } from "../adapters/registry.ts";
import type { Caller } from "../util/caller.ts";
import { ClientError } from "../util/errors.ts";
import type { BaseCatalog } from "./bases.ts";
import { type Hyperparameters, hyperparametersParam, type JobMethod, resolveHyperparameters } from "./hyperparameters.ts";
import { JobRepository } from "./repository.ts";
import {
  checkpointModelId,
  type CheckpointRecord,
  type CreateJobRequest,
  fineTunedModelId,
  type JobEvent,
  type JobRecord,
  type JobStatus,
  type Page,
  type PageOptions,
  SUFFIX_RE,
  TERMINAL,
} from "./types.ts";

export interface JobServiceOptions {
  store: Store;
  files: FileStore;
  /** The models a job may name. */
  bases: BaseCatalog;
  /** Called when a job was created, so that the runner (maybe in another thread) wakes. */
  onQueued?: (() => void) | null;
}

/** The largest seed (OpenAI's: a 32-bit signed integer). */
const MAX_SEED = 2 ** 31 - 1;

export class JobService {
  readonly #repo: JobRepository;
  readonly #files: FileStore;
  readonly #bases: BaseCatalog;
  readonly #onQueued: (() => void) | null;

  constructor(o: JobServiceOptions) {
    this.#repo = new JobRepository(o.store);
    this.#files = o.files;
    this.#bases = o.bases;
    this.#onQueued = o.onQueued ?? null;
  }

  /** The tenant's jobs not yet finished (the running-jobs quota, api/quotas.ts). */
  unfinished(tenant: string): number {
    return this.#repo.unfinished(tenant);
  }

  create(caller: Caller, req: CreateJobRequest): JobRecord {
    const models = this.#bases.models();
    // a fine-tuned model (or checkpoint) of the caller's continues training on its base
    const parent = models.includes(req.model) ? undefined : this.#repo.producedModel(caller, req.model);
    const base = parent?.job.model ?? req.model;
    if (!models.includes(base)) {
      throw new ClientError(
        400,
        `model "${req.model}" cannot be fine-tuned here (models: ${models.join(", ")}, or a fine-tuned model of yours)`,
        "model_not_found",
        "model",
      );
    }
    const method = req.method ?? "supervised";
    const train = this.#fineTuneFile(caller, req.training_file, "training_file");
    this.#checkData(train, base, method, "training_file");
    if (req.validation_file) {
      this.#checkData(this.#fineTuneFile(caller, req.validation_file, "validation_file"), base, method, "validation_file");
    }
    const suffix = req.suffix ?? null;
    checkModelIds(base, suffix);
    const seed = req.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (!Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
      throw new ClientError(400, `seed: an integer in [0, ${MAX_SEED}]`, "invalid_value", "seed");
    }
    // continuing: the adapter's shape is the parent's (rank, alpha, modules, base quant); another cannot load its weights
    const inherited = parent ? adapterShape(parent.job.hyper) : {};
    const hyper = resolveHyperparameters({ ...inherited, ...req.hyperparameters }, {
      examples: train.examples,
      maxModelLen: this.#bases.maxModelLen(base),
      quants: this.#bases.quants(),
    }, method);
    for (const [field, value] of Object.entries(inherited) as [keyof Hyperparameters, unknown][]) {
      if (JSON.stringify(hyper[field]) !== JSON.stringify(value)) {
        throw new ClientError(
          400,
          `${field}: a job continuing from ${req.model} trains its adapter, whose ${field} is ${JSON.stringify(value)}`,
          "invalid_value",
          `${hyperparametersParam(method)}.${field}`,
        );
      }
    }
    const id = this.#repo.insert({
      tenant: caller.tenant,
      model: base,
      trainingFile: train.id,
      validationFile: req.validation_file ?? null,
      suffix,
      seed,
      metadata: req.metadata ?? null,
      method,
      initFrom: parent ? { model: req.model, dir: parent.dir } : null,
      hyper,
    });
    this.#repo.addEvent(id, "info", `Created fine-tuning job: ${id}`);
    const warning = fewStepsWarning(train.examples, hyper);
    if (warning) this.#repo.addEvent(id, "warn", warning);
    // the job as created, read before the runner (maybe another thread) is woken and moves it on
    const job = this.require(caller, id);
    this.#onQueued?.();
    return job;
  }

  get(caller: Caller, id: string): JobRecord | undefined {
    return this.#repo.jobFor(caller, id);
  }

  require(caller: Caller, id: string): JobRecord {
    const job = this.get(caller, id);
    if (!job) throw new ClientError(404, `no fine-tuning job with id "${id}"`, "job_not_found", "fine_tuning_job_id");
    return job;
  }

  /** Newest first; `metadata` keeps the jobs with those values. */
  list(caller: Caller, opts: PageOptions & { metadata?: Record<string, string> } = {}): Page<JobRecord> {
    if (opts.after && !this.get(caller, opts.after)) {
      throw new ClientError(400, `after: no fine-tuning job with id "${opts.after}"`, "invalid_value", "after");
    }
    return this.#repo.list(caller, { afterId: opts.after, limit: clamp(opts.limit ?? 20, 100), metadata: opts.metadata ?? {} });
  }

  /** Cancels a job that has not finished (a running one stops after its current micro-batch). */
  cancel(caller: Caller, id: string): JobRecord {
    const job = this.require(caller, id);
    const outcome = TERMINAL.includes(job.status) ? "finished" : this.#repo.cancel(job.id);
    if (outcome === "finished") {
      throw new ClientError(409, `the job is already ${this.require(caller, id).status}`, "job_not_cancellable", "fine_tuning_job_id");
    }
    this.#repo.addEvent(
      job.id,
      "info",
      outcome === "cancelled" ? "The job was cancelled." : "Cancellation requested; the job stops after its current micro-batch.",
    );
    return this.require(caller, id);
  }

  /** Records that the caller deleted one of its fine-tuned models (or checkpoints), if a job made
   * it, so that a restart does not publish it again. */
  forgetModel(caller: Caller, modelId: string): void {
    if (this.#repo.producedModel(caller, modelId)) this.#repo.markModelDeleted(modelId);
  }

  /** Pauses a job (OpenAI's POST …/pause): a waiting one at once; a running one checkpoints after
   * its current micro-batch, then shows "paused". Its checkpoints stay servable. */
  pause(caller: Caller, id: string): JobRecord {
    const job = this.require(caller, id);
    const outcome = this.#repo.pause(job.id);
    if (outcome === "not_pausable") {
      throw new ClientError(409, `a ${job.status} job cannot be paused`, "job_not_pausable", "fine_tuning_job_id");
    }
    this.#repo.addEvent(
      job.id,
      "info",
      outcome === "paused" ? "The job was paused." : "Pause requested; the job checkpoints after its current micro-batch.",
    );
    return this.require(caller, id);
  }

  /** Resumes a paused job from its last checkpoint (OpenAI's POST …/resume). */
  resume(caller: Caller, id: string): JobRecord {
    const job = this.require(caller, id);
    const outcome = this.#repo.resume(job.id);
    if (outcome === "not_paused") {
      throw new ClientError(409, `the job is ${job.status}, not paused`, "job_not_paused", "fine_tuning_job_id");
    }
    this.#repo.addEvent(job.id, "info", outcome === "resumed" ? "The job was resumed; it is queued." : "The pause request was withdrawn.");
    const resumed = this.require(caller, id);
    if (outcome === "resumed") this.#onQueued?.();
    return resumed;
  }

  /** Newest first. */
  events(caller: Caller, id: string, opts: PageOptions = {}): Page<JobEvent> {
    const job = this.require(caller, id);
    const page = this.#repo.events(job.id, opts.after, clamp(opts.limit ?? 20, 1000));
    if (!page) throw new ClientError(400, `after: no event with id "${opts.after}" in this job`, "invalid_value", "after");
    return page;
  }

  /** Newest first. */
  checkpoints(caller: Caller, id: string, opts: PageOptions = {}): Page<CheckpointRecord> {
    const job = this.require(caller, id);
    const page = this.#repo.checkpoints(job.id, opts.after, clamp(opts.limit ?? 10, 100));
    if (!page) throw new ClientError(400, `after: no checkpoint with id "${opts.after}" in this job`, "invalid_value", "after");
    return page;
  }

  /** Resolves when the job reaches one of the statuses (polling; for tests and scripts). */
  async waitFor(id: string, statuses: readonly JobStatus[] = TERMINAL, timeoutMs = 120_000): Promise<JobRecord> {
    const t0 = Date.now();
    while (true) {
      const job = this.#repo.job(id);
      if (!job) throw new Error(`no job ${id}`);
      if (statuses.includes(job.status)) return job;
      if (Date.now() - t0 > timeoutMs) throw new Error(`job ${id} is still ${job.status} after ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** Refuses data that cannot train with this method on this model, naming the file and the reason. */
  #checkData(file: FileRecord, model: string, method: JobMethod, param: "training_file" | "validation_file"): void {
    if (file.kinds === null) return; // uploaded before formats were recorded: checked when the job runs
    const fail = (message: string) => new ClientError(400, `${param}: file "${file.id}" ${message}`, "invalid_file", param);
    const preference = file.kinds.includes("preference");
    if (method === "dpo" && file.kinds.some((k) => k !== "preference")) {
      throw fail(
        `holds ${file.kinds.filter((k) => k !== "preference").join(" and ")} examples; DPO trains on preference examples ` +
          `({"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]})`,
      );
    }
    if (method === "supervised" && preference) {
      throw fail('holds preference examples, which train with DPO: set method {"type": "dpo"}');
    }
    if ((file.kinds.includes("chat") || preference) && !this.#bases.hasChatTemplate(model)) {
      throw fail(
        `holds chat messages, but model "${model}" has no chat template to render them: ` +
          `use {"prompt": ..., "completion": ...} examples, or serve a model folder with a chat template`,
      );
    }
  }

  /** The caller's file with purpose "fine-tune", for the request field `param`. */
  #fineTuneFile(caller: Caller, id: string, param: "training_file" | "validation_file"): FileRecord {
    const file = this.#files.get(caller, id);
    if (!file) throw new ClientError(400, `${param}: no file with id "${id}"`, "invalid_file", param);
    if (file.purpose !== "fine-tune") {
      throw new ClientError(400, `${param}: file "${file.id}" has purpose "${file.purpose}", not "fine-tune"`, "invalid_file", param);
    }
    return file;
  }
}

const clamp = (limit: number, max: number) => Math.max(1, Math.min(limit, max));

/** What an adapter's weights fix: a job continuing from it must keep them. */
const adapterShape = (h: Hyperparameters) => ({
  lora_r: h.lora_r,
  lora_alpha: h.lora_alpha,
  target_modules: h.target_modules,
  use_rslora: h.use_rslora,
  quant: h.quant,
});

/** Fewer optimizer steps than this rarely move a model: the job says so when it is created. */
export const FEW_STEPS = 50;

/** A warning when the job will take few optimizer steps (examples / batch_size × n_epochs). */
function fewStepsWarning(examples: number, h: Hyperparameters): string | null {
  const steps = Math.ceil(examples / h.batch_size) * h.n_epochs;
  if (steps >= FEW_STEPS) return null;
  return `This job will run only ${steps} optimizer steps (${examples} examples, batch_size ${h.batch_size}, n_epochs ${h.n_epochs}); ` +
    `fewer than ${FEW_STEPS} rarely change a model much: consider more examples, more epochs or a smaller batch_size.`;
}

/** The suffix is valid, and the longest model id the job will make (a checkpoint's, with the
 * longest job id and step) is one the adapter registry accepts. */
function checkModelIds(model: string, suffix: string | null): void {
  if (suffix !== null && !SUFFIX_RE.test(suffix)) {
    throw new ClientError(400, "suffix: 1-64 characters of letters, digits, '.', '_', '-'", "invalid_value", "suffix");
  }
  const longest = checkpointModelId(fineTunedModelId(model, suffix, "ftjob-" + "x".repeat(24)), 9999999);
  if (!ADAPTER_ID_RE.test(longest)) {
    throw new ClientError(
      400,
      `suffix: the fine-tuned model ids (${longest.length} characters with a checkpoint's) must be at most 128 of letters, digits, '.', '_', ':', '-'`,
      "invalid_value",
      "suffix",
    );
  }
}
