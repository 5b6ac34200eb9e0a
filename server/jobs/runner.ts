// runner.ts — the queue that trains fine-tuning jobs, one at a time, in the engine worker: it
// checks the files of new jobs, claims the oldest queued job, trains it on a base from its
// BaseProvider, writes checkpoints (atomic PEFT folders, published as servable models
// `ft:<base>:<suffix>:<job id>:ckpt-step-<N>`, the result as `ft:<base>:<suffix>:<job id>`), and
// records metrics per step. After a crash or restart a job resumes from its last checkpoint
// (optimizer state included) — or fails with the reason. Jobs are created and cancelled by the
// JobService (service.ts), possibly in another thread: everything goes through the database.
//
// Training shares the compute: the trainer yields to the event loop between micro-batches, and
// after each step the runner sleeps so that training takes about `computeShare` of the wall time.
import { setTimeout as sleep } from "node:timers/promises";
import type { Store } from "../store/db.ts";
import type { FileStore } from "../store/files.ts";
import { DatasetError, type Example, parseJsonl, tokenizeExample, tokenizePair } from "../training/dataset.ts";
import { type StepEvent, totalSteps, Trainer, type TrainerState, type TrainItem } from "../training/trainer.ts";
import { isResumable, loadCheckpoint, loadLoraWeights, writeCheckpoint } from "../training/checkpoints.ts";
import type { BaseProvider, TrainingBase } from "./bases.ts";
import { trainConfig } from "./hyperparameters.ts";
import type { ModelPublisher } from "./publisher.ts";
import { JobRepository } from "./repository.ts";
import { checkpointModelId, fineTunedModelId, type InitFrom, type JobError, type JobEvent, type JobRecord } from "./types.ts";

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
}

/** How a run that did not fail ended. */
type RunEnd = "succeeded" | "cancelled" | "paused" | "interrupted";

/** A job's data, tokenized for its base. */
interface JobData {
  train: TrainItem[];
  validation: TrainItem[] | null;
}

/** Why a job failed, as the job shows it. */
class JobFailure extends Error {
  constructor(readonly error: JobError) {
    super(error.message);
  }
}

export class JobRunner {
  readonly files: FileStore;
  readonly bases: BaseProvider;
  readonly publisher: ModelPublisher | null;
  readonly checkpointDir: string;
  computeShare: number;
  readonly optimizerBudgetBytes: number;
  readonly #repo: JobRepository;
  readonly #log: ((entry: Record<string, unknown>) => void) | null;
  readonly #onCheckpoint: JobRunnerOptions["onCheckpoint"];
  #started = false;
  #stopping = false;
  #loop: Promise<void> | null = null;
  #wake = false;
  #running: string | null = null;
  /** Peak optimizer-state bytes resident in the last run (for the bench and tests). */
  lastOptimizerMemory: { total: number; resident: number; peakResident: number } | null = null;
  /** Milliseconds spent training (steps) and yielding to serving (the compute share's sleeps). */
  readonly usage = { trainMs: 0, yieldedMs: 0 };

  constructor(o: JobRunnerOptions) {
    this.#repo = new JobRepository(o.store);
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
    for (const job of this.#repo.withStatus("running")) {
      this.#event(job.id, "info", "The job was interrupted (server restart); it will resume from its last checkpoint.");
      this.#repo.requeue(job.id);
    }
    this.#kick();
    for (const job of this.#repo.withStatus("succeeded")) await this.#publishJob(job);
  }

  /** Stops after the current micro-batch, leaving a running job as it is in the database, as a
   * crash would (it resumes on the next start). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#kick();
    await this.#loop;
    this.#started = false;
  }

  /** Starts work on jobs created since (by the JobService, maybe in another thread). */
  poke(): void {
    this.#kick();
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
      for (const job of this.#repo.withStatus("validating_files")) await this.#validate(job);
      const [next] = this.#repo.withStatus("queued", 1);
      if (!next) {
        if (!this.#wake) return;
        continue;
      }
      await this.#run(next);
    }
  }

  async #validate(job: JobRecord): Promise<void> {
    for (const [param, fileId] of this.#filesOf(job)) {
      try {
        await this.#parseFile(fileId, param);
      } catch (e) {
        this.#fail(
          job.id,
          e instanceof JobFailure ? e.error : { code: "invalid_file", message: `${param} ${fileId}: ${(e as Error).message}`, param },
        );
        return;
      }
    }
    this.#repo.markValidated(job.id);
    this.#event(job.id, "info", "Validated training file(s); the job is queued.");
  }

  /** Trains a queued job to its end, a cancel, or a stop of the runner. */
  async #run(job: JobRecord): Promise<void> {
    if (!this.#repo.claim(job.id)) return; // cancelled since it was listed
    this.#running = job.id;
    let base: TrainingBase | null = null;
    let trainer: Trainer | null = null;
    try {
      base = await this.bases.acquire(job.model, job.hyper.quant);
      const data = await this.#loadData(job, base);
      const jobDir = await this.#prepareJobDir(job);
      trainer = this.#newTrainer(job, base, data, jobDir);
      await this.#resumeOrStart(job, trainer, base, data);
      this.#settle(job, trainer, await this.#train(job, trainer, base, data));
    } catch (e) {
      this.#log?.({
        ts: new Date().toISOString(),
        level: "error",
        msg: "fine-tuning job failed",
        job: job.id,
        error: String((e as Error)?.stack ?? e),
      });
      this.#fail(
        job.id,
        e instanceof JobFailure ? e.error : { code: "training_failed", message: (e as Error)?.message ?? String(e), param: null },
      );
    } finally {
      trainer?.dispose();
      if (base) this.bases.release?.(base);
      this.#running = null;
    }
  }

  /** The job's files and the request fields that named them. */
  #filesOf(job: JobRecord): (readonly ["training_file" | "validation_file", string])[] {
    return [["training_file", job.trainingFile], ...(job.validationFile ? [["validation_file", job.validationFile] as const] : [])];
  }

  async #parseFile(fileId: string, param: string): Promise<Example[]> {
    const text = await this.files.textById(fileId);
    if (text === null) throw new JobFailure({ code: "invalid_file", message: `${param} ${fileId} no longer exists`, param });
    return this.#asJobFailure(fileId, param, () => parseJsonl(text));
  }

  /** A file's faults (DatasetError) as the job's failure, naming the file. */
  #asJobFailure<T>(fileId: string, param: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof DatasetError) throw new JobFailure({ code: "invalid_file", message: `${param} ${fileId}: ${e.message}`, param });
      throw e;
    }
  }

  async #loadData(job: JobRecord, base: TrainingBase): Promise<JobData> {
    const opts = { trainOnInputs: job.hyper.train_on_inputs, eosTokenId: base.eosTokenIds[0] ?? null };
    const tokenize = (e: Example): TrainItem =>
      job.method === "dpo" ? tokenizePair(base.tokenizer, e, opts) : tokenizeExample(base.tokenizer, e, opts);
    const tokenized = async (fileId: string, param: string) => {
      const examples = await this.#parseFile(fileId, param);
      // in slices of at most ~20 ms, yielding between them: the engine's decode steps share this
      // thread, and a big file must not stall every tenant's streams while it is tokenized
      const out: TrainItem[] = [];
      let slice = performance.now();
      for (const e of examples) {
        out.push(this.#asJobFailure(fileId, param, () => tokenize(e)));
        if (performance.now() - slice > 20) {
          await new Promise((r) => setTimeout(r, 0));
          slice = performance.now();
        }
      }
      return out;
    };
    return {
      train: await tokenized(job.trainingFile, "training_file"),
      validation: job.validationFile ? await tokenized(job.validationFile, "validation_file") : null,
    };
  }

  #jobDir(job: JobRecord): string {
    return `${this.checkpointDir}/${encodeURIComponent(job.tenant)}/${job.id}`;
  }

  /** The job's folder, with its spill folder for the paged optimizers. */
  async #prepareJobDir(job: JobRecord): Promise<string> {
    const jobDir = this.#jobDir(job);
    await Deno.mkdir(`${jobDir}/spill`, { recursive: true });
    // a checkpoint folder that a crash left half-written was never renamed into place: remove it
    for await (const d of Deno.readDir(jobDir)) {
      if (d.name.startsWith(".") && d.name.includes(".tmp-")) await Deno.remove(`${jobDir}/${d.name}`, { recursive: true }).catch(() => {});
    }
    return jobDir;
  }

  /** A trainer for the job, checkpointing every checkpoint_every steps ("auto": about 5 per job);
   * records the job's step and token counts. */
  #newTrainer(job: JobRecord, base: TrainingBase, data: JobData, jobDir: string): Trainer {
    const h = job.hyper;
    const paged = h.optimizer !== "adamw";
    const run = { seed: job.seed, optimizerBudgetBytes: paged ? this.optimizerBudgetBytes : 0, checkpointEvery: 0 };
    const config = trainConfig(h, run, job.method);
    const total = totalSteps(data.train, config);
    const checkpointEvery = h.checkpoint_every > 0 ? h.checkpoint_every : Math.max(1, Math.ceil(total / 5));
    const tokens = (ids: number[]) => Math.min(ids.length, h.max_seq_len);
    const trainedTokens =
      data.train.reduce((s, x) => s + ("chosen" in x ? tokens(x.chosen.ids) + tokens(x.rejected.ids) : tokens(x.ids)), 0) *
      h.n_epochs;
    this.#repo.setTotals(job.id, total, trainedTokens);
    return new Trainer(base.ctx, base.model, { ...config, checkpointEvery }, paged ? `${jobDir}/spill` : null);
  }

  /** Resumes from the newest checkpoint that is complete and loads (older ones if it does not),
   * or starts afresh. */
  async #resumeOrStart(job: JobRecord, trainer: Trainer, base: TrainingBase, data: JobData): Promise<void> {
    const total = trainer.totalSteps(data.train);
    const resumeFrom = this.#repo.resumable(job.id);
    if (resumeFrom.length === 0) {
      if (job.step > 0) {
        this.#repo.dropMetricsAfter(job.id, 0);
        this.#event(job.id, "info", "No checkpoint was written before the interruption; training restarts from step 0.");
      } else {
        const started = `${total} steps, ${data.train.length} examples, ${trainer.lora.numParameters} LoRA parameters`;
        this.#event(job.id, "info", `Fine-tuning job started: ${started}.`);
      }
      if (job.initFrom) await this.#initFrom(job, job.initFrom, trainer, base);
      return;
    }
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
    this.#repo.dropMetricsAfter(job.id, trainer.step);
    this.#event(job.id, "info", `Resumed from the checkpoint at step ${trainer.step} (LoRA weights and optimizer state).`);
  }

  /** Starts from a fine-tuned model's LoRA weights (a fresh optimizer; the schedule starts over). */
  async #initFrom(job: JobRecord, from: InitFrom, trainer: Trainer, base: TrainingBase): Promise<void> {
    try {
      await loadLoraWeights(from.dir, trainer.lora, base.model.shape);
    } catch (e) {
      throw new JobFailure({
        code: "invalid_model",
        message: `cannot continue from ${from.model}: ${(e as Error).message}`,
        param: "model",
      });
    }
    this.#event(job.id, "info", `Continuing from the weights of ${from.model}.`);
  }

  async #train(job: JobRecord, trainer: Trainer, base: TrainingBase, data: JobData): Promise<RunEnd> {
    let stepStart = performance.now();
    let lastMetrics: Record<string, number> = {};
    const ended = await trainer.run(data.train, data.validation, {
      onStep: async (e) => {
        lastMetrics = this.#recordStep(job, e);
        await this.#shareCompute(performance.now() - stepStart);
        stepStart = performance.now();
      },
      onCheckpoint: (step, final, state) => this.#checkpoint(job, base, step, final, state, lastMetrics),
      shouldStop: () => this.#stopping || this.#repo.cancelRequested(job.id) || this.#repo.pauseRequested(job.id),
    });
    if (ended === "completed") return "succeeded";
    if (this.#repo.cancelRequested(job.id)) return "cancelled";
    if (!this.#stopping && this.#repo.pauseRequested(job.id)) {
      // the weights and optimizer are those of the last whole step: checkpoint them, so that resume
      // continues exactly there (and the paused model can be tried)
      const last = this.#repo.resumable(job.id)[0]?.step ?? 0;
      if (trainer.step > last) await this.#checkpoint(job, base, trainer.step, false, trainer.state, lastMetrics);
      return "paused";
    }
    return "interrupted";
  }

  /** The step's metrics event and progress; returns the metrics. */
  #recordStep(job: JobRecord, e: StepEvent): Record<string, number> {
    const data: Record<string, number> = {
      step: e.step,
      total_steps: e.totalSteps,
      epoch: e.epoch,
      train_loss: e.loss,
      learning_rate: e.lr,
      grad_norm: e.gradNorm,
      tokens_per_second: e.tokensPerSecond,
      ...(e.accuracy !== undefined ? { train_mean_token_accuracy: e.accuracy } : {}),
      ...(e.validationLoss !== undefined ? { valid_loss: e.validationLoss } : {}),
      ...(e.validationAccuracy !== undefined ? { valid_mean_token_accuracy: e.validationAccuracy } : {}),
      // DPO: TRL's rewards/* per step, averaged over the step's pairs
      ...(e.dpo
        ? {
          rewards_chosen: e.dpo.chosenReward,
          rewards_rejected: e.dpo.rejectedReward,
          rewards_margin: e.dpo.margin,
          rewards_accuracy: e.dpo.accuracy,
        }
        : {}),
    };
    const validation = e.validationLoss !== undefined ? `, validation loss=${e.validationLoss.toFixed(4)}` : "";
    this.#event(job.id, "info", `Step ${e.step}/${e.totalSteps}: training loss=${e.loss.toFixed(4)}${validation}`, "metrics", data);
    this.#repo.setStep(job.id, e.step);
    return data;
  }

  /** Sleeps after a step of `trainMs` so that training takes about computeShare of the time. */
  async #shareCompute(trainMs: number): Promise<void> {
    this.usage.trainMs += trainMs;
    if (this.computeShare >= 1) return;
    const pause = Math.min(10_000, trainMs * (1 / this.computeShare - 1));
    this.usage.yieldedMs += pause;
    await sleep(pause);
  }

  /** Records how a run that did not fail ended (a succeeded one was recorded with its final checkpoint). */
  #settle(job: JobRecord, trainer: Trainer, end: RunEnd): void {
    this.lastOptimizerMemory = trainer.optimizer.memory();
    if (end === "cancelled") {
      this.#repo.finish(job.id, "cancelled", null);
      this.#event(job.id, "info", `The job was cancelled at step ${trainer.step}.`);
    } else if (end === "paused") {
      this.#repo.markPaused(job.id);
      this.#event(job.id, "info", `The job was paused at step ${trainer.step}; resume continues from there.`);
    } else if (end === "interrupted") {
      this.#event(job.id, "info", `Training paused at step ${trainer.step} (server stopping); it resumes from the last checkpoint.`);
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
    await writeCheckpoint(dir, state, { baseModel: base.id, hyperparameters: job.hyper, withOptimizer: !final });
    const modelId = fineTunedModelId(job.model, job.suffix, job.id);
    const ckptModel = checkpointModelId(modelId, step);
    const { train_loss, valid_loss } = metrics;
    const ckptMetrics = { step, ...(train_loss !== undefined ? { train_loss } : {}), ...(valid_loss !== undefined ? { valid_loss } : {}) };
    // servable first, then recorded: a checkpoint (or a succeeded job) that the API lists can be
    // used; a final model that cannot be served fails the job (it did not produce a model)
    await this.#publish(job, ckptModel, dir, final);
    if (final) await this.#publish(job, modelId, dir, true);
    const resultFiles = final ? [(await this.#writeResults(job)).id] : [];
    this.#repo.transaction(() => {
      this.#repo.addCheckpoint({ jobId: job.id, step, modelId: ckptModel, dir, metrics: ckptMetrics, final });
      if (final) {
        this.#event(job.id, "info", `New fine-tuned model created: ${modelId}`);
        this.#event(job.id, "info", "The job has successfully completed");
        this.#repo.succeed(job.id, modelId, step, resultFiles);
      } else this.#event(job.id, "info", `Checkpoint created at step ${step}: ${ckptModel}`);
    });
    this.#onCheckpoint?.(job.id, step, final);
  }

  /** Registers a model for serving; a failure is a warning, or the job's failure when `required`. */
  /** OpenAI's result file: one CSV row per step (step, train_loss, train_mean_token_accuracy,
   * valid_loss, valid_mean_token_accuracy; empty where not measured), owned by the job's tenant. */
  async #writeResults(job: JobRecord) {
    const columns = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"];
    const rows = this.#repo.metrics(job.id).map((m) => columns.map((c) => m[c] ?? "").join(","));
    const csv = [columns.join(","), ...rows].join("\n") + "\n";
    return await this.files.createResult(job.tenant, `${job.id}_step_metrics.csv`, new TextEncoder().encode(csv));
  }

  async #publish(job: JobRecord, id: string, dir: string, required = false): Promise<void> {
    if (!this.publisher) return;
    try {
      await this.publisher.publish(job.tenant, id, dir);
    } catch (e) {
      const message = `${id} could not be registered for serving: ${(e as Error).message}`;
      if (required) throw new JobFailure({ code: "model_not_servable", message: `the fine-tuned model ${message}`, param: null });
      this.#event(job.id, "warn", `the checkpoint ${message}`);
    }
  }

  /** Publishes a finished job's checkpoints and model again (after a restart). */
  async #publishJob(job: JobRecord): Promise<void> {
    if (!this.publisher) return;
    for (const c of this.#repo.allCheckpoints(job.id)) {
      if (!this.#repo.isModelDeleted(c.modelId)) await this.#publish(job, c.modelId, c.dir);
      if (c.final && job.fineTunedModel && !this.#repo.isModelDeleted(job.fineTunedModel)) {
        await this.#publish(job, job.fineTunedModel, c.dir);
      }
    }
  }

  #fail(id: string, error: JobError): void {
    this.#repo.finish(id, "failed", error);
    this.#event(id, "error", `The job failed: ${error.message}`);
  }

  #event(jobId: string, level: JobEvent["level"], message: string, type?: JobEvent["type"], data?: Record<string, unknown>): void {
    this.#repo.addEvent(jobId, level, message, type, data);
  }
}
