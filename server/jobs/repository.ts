// repository.ts — every SQL statement on fine-tuning jobs, their events and their checkpoints
// (server/store/db.ts's tables). Rows come back as the records of types.ts; tenant scoping is
// here too (a caller that is not an admin sees only its tenant's jobs). Both sides use it on the
// same database: the API's JobService on the HTTP thread, the JobRunner in the engine worker.
import { newId, nowSeconds, type Store } from "../store/db.ts";
import type { Caller } from "../util/caller.ts";
import { type CheckpointRecord, type JobError, type JobEvent, type JobRecord, type JobStatus, type Page, TERMINAL } from "./types.ts";

const JOB_COLUMNS = `id, tenant, model, training_file AS trainingFile, validation_file AS validationFile, suffix, seed,
  metadata, method, hyper, status, created_at AS createdAt, started_at AS startedAt, finished_at AS finishedAt, error,
  fine_tuned_model AS fineTunedModel, trained_tokens AS trainedTokens, step, total_steps AS totalSteps, result_files AS resultFiles`;
const EVENT_COLUMNS = "id, job_id AS jobId, created_at AS createdAt, level, type, message, data";
const CHECKPOINT_COLUMNS = "id, job_id AS jobId, step, created_at AS createdAt, model_id AS modelId, dir, metrics, final";

/** A row as SQLite gives it: the JSON columns still text. */
type Stored<T, Json extends keyof T> = Omit<T, Json> & { [K in Json]: string | null };

const parseJson = (text: string | null) => text === null ? null : JSON.parse(text);
const toJob = (r: Stored<JobRecord, "metadata" | "method" | "hyper" | "error" | "resultFiles">): JobRecord => ({
  ...r,
  resultFiles: parseJson(r.resultFiles) ?? [],
  method: parseJson(r.method)?.type ?? "supervised",
  initFrom: parseJson(r.method)?.from ?? null,
  metadata: parseJson(r.metadata),
  hyper: parseJson(r.hyper),
  error: parseJson(r.error),
});
const toEvent = (r: Stored<JobEvent, "data">): JobEvent => ({ ...r, data: parseJson(r.data) });
const toCheckpoint = (r: Stored<CheckpointRecord, "metrics" | "final">): CheckpointRecord => ({
  ...r,
  metrics: parseJson(r.metrics),
  final: Number(r.final) === 1,
});

/** A new job's row (its id, status and times are set here). */
export type NewJob = Pick<
  JobRecord,
  "tenant" | "model" | "trainingFile" | "validationFile" | "suffix" | "seed" | "metadata" | "method" | "initFrom" | "hyper"
>;

const TERMINAL_SQL = "('succeeded', 'failed', 'cancelled')";

export class JobRepository {
  constructor(readonly store: Store) {}

  // ------------------------------------------------------------------------------------ jobs

  insert(job: NewJob): string {
    const id = newId("ftjob");
    this.store.run(
      `INSERT INTO jobs (id, tenant, model, training_file, validation_file, suffix, seed, metadata, method, hyper, status, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'validating_files', ?)`,
      id,
      job.tenant,
      job.model,
      job.trainingFile,
      job.validationFile,
      job.suffix,
      job.seed,
      job.metadata ? JSON.stringify(job.metadata) : null,
      JSON.stringify({ type: job.method, ...(job.initFrom ? { from: job.initFrom } : {}) }),
      JSON.stringify(job.hyper),
      nowSeconds(),
    );
    return id;
  }

  /** The job, whoever owns it (the runner's view). */
  job(id: string): JobRecord | undefined {
    const r = this.store.get<Stored<JobRecord, "metadata" | "method" | "hyper" | "error" | "resultFiles">>(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE id = ?`,
      id,
    );
    return r && toJob(r);
  }

  /** The job if the caller may see it. */
  jobFor(caller: Caller, id: string): JobRecord | undefined {
    const job = this.job(id);
    return job && (caller.admin || job.tenant === caller.tenant) ? job : undefined;
  }

  /** Newest first, after the job `afterId` (one the caller may see). */
  list(caller: Caller, opts: { afterId?: string; limit: number; metadata: Record<string, string> }): Page<JobRecord> {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (!caller.admin) {
      where.push("tenant = ?");
      params.push(caller.tenant);
    }
    if (opts.afterId) {
      where.push("seq < (SELECT seq FROM jobs WHERE id = ?)");
      params.push(opts.afterId);
    }
    for (const [k, v] of Object.entries(opts.metadata)) {
      where.push("json_extract(metadata, ?) = ?");
      params.push(`$."${k.replace(/"/g, "")}"`, v);
    }
    const rows = this.store.all<Stored<JobRecord, "metadata" | "method" | "hyper" | "error" | "resultFiles">>(
      `SELECT ${JOB_COLUMNS} FROM jobs ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY seq DESC LIMIT ?`,
      ...params,
      opts.limit + 1,
    );
    return { data: rows.slice(0, opts.limit).map(toJob), hasMore: rows.length > opts.limit };
  }

  /** Jobs in a status, oldest first. */
  withStatus(status: JobStatus, limit = -1): JobRecord[] {
    return this.store.all<Stored<JobRecord, "metadata" | "method" | "hyper" | "error" | "resultFiles">>(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq LIMIT ?`,
      status,
      limit,
    ).map(toJob);
  }

  /** validating_files → queued. */
  markValidated(id: string): void {
    this.store.run("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'validating_files'", id);
  }

  /** running → queued (after a restart). */
  requeue(id: string): void {
    this.store.run("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'", id);
  }

  /** queued → running; false when the job is no longer queued (cancelled meanwhile). */
  claim(id: string): boolean {
    return this.store.run(
      "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?) WHERE id = ? AND status = 'queued'",
      nowSeconds(),
      id,
    ).changes === 1;
  }

  setTotals(id: string, totalSteps: number, trainedTokens: number): void {
    this.store.run("UPDATE jobs SET total_steps = ?, trained_tokens = ? WHERE id = ?", totalSteps, trainedTokens, id);
  }

  setStep(id: string, step: number): void {
    this.store.run("UPDATE jobs SET step = ? WHERE id = ?", step, id);
  }

  /** Ends a job that has not ended. */
  finish(id: string, status: "failed" | "cancelled", error: JobError | null): void {
    this.store.run(
      `UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status NOT IN ${TERMINAL_SQL}`,
      status,
      nowSeconds(),
      error ? JSON.stringify(error) : null,
      id,
    );
  }

  succeed(id: string, fineTunedModel: string, step: number, resultFiles: string[]): void {
    this.store.run(
      `UPDATE jobs SET status = 'succeeded', finished_at = ?, fine_tuned_model = ?, step = ?, result_files = ?
       WHERE id = ? AND status = 'running'`,
      nowSeconds(),
      fineTunedModel,
      step,
      JSON.stringify(resultFiles),
      id,
    );
  }

  /** The job's metrics events' data, by step. */
  metrics(jobId: string): Record<string, number>[] {
    return this.store.all<{ data: string }>(
      "SELECT data FROM job_events WHERE job_id = ? AND type = 'metrics' ORDER BY CAST(json_extract(data, '$.step') AS INTEGER), seq",
      jobId,
    ).map((r) => JSON.parse(r.data));
  }

  /** Cancels a job that has not started at once ("cancelled"); a running one is asked to stop
   * ("requested": its runner, maybe in another thread, reads the request between micro-batches). */
  cancel(id: string): "cancelled" | "requested" | "finished" {
    return this.store.transaction(() => {
      const waiting = this.store.run(
        "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('validating_files', 'queued', 'paused')",
        nowSeconds(),
        id,
      );
      if (waiting.changes === 1) return "cancelled";
      const running = this.store.run("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", id);
      return running.changes === 1 ? "requested" : "finished";
    });
  }

  cancelRequested(id: string): boolean {
    return this.store.get<{ c: number }>("SELECT cancel_requested AS c FROM jobs WHERE id = ?", id)?.c === 1;
  }

  /** The tenant's jobs that have not finished (any status but the terminal ones). */
  unfinished(tenant: string): number {
    const marks = TERMINAL.map(() => "?").join(", ");
    return Number(
      this.store.get<{ n: number }>(`SELECT COUNT(*) AS n FROM jobs WHERE tenant = ? AND status NOT IN (${marks})`, tenant, ...TERMINAL)
        ?.n ?? 0,
    );
  }

  /** Pauses a job that waits at once ("paused"); a running one is asked to ("requested": its runner
   * checkpoints after the current micro-batch and marks it paused). */
  pause(id: string): "paused" | "requested" | "not_pausable" {
    return this.store.transaction(() => {
      const waiting = this.store.run("UPDATE jobs SET status = 'paused' WHERE id = ? AND status IN ('validating_files', 'queued')", id);
      if (waiting.changes === 1) return "paused";
      const running = this.store.run(
        "UPDATE jobs SET pause_requested = 1 WHERE id = ? AND status = 'running' AND cancel_requested = 0",
        id,
      );
      return running.changes === 1 ? "requested" : "not_pausable";
    });
  }

  pauseRequested(id: string): boolean {
    return this.store.get<{ p: number }>("SELECT pause_requested AS p FROM jobs WHERE id = ?", id)?.p === 1;
  }

  /** running → paused (by its runner, after the pause checkpoint). */
  markPaused(id: string): void {
    this.store.run("UPDATE jobs SET status = 'paused', pause_requested = 0 WHERE id = ? AND status = 'running'", id);
  }

  /** paused → queued ("resumed"; its runner resumes from the last checkpoint); a pause not yet
   * taken is withdrawn ("withdrawn"). */
  resume(id: string): "resumed" | "withdrawn" | "not_paused" {
    return this.store.transaction(() => {
      if (this.store.run("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'paused'", id).changes === 1) return "resumed";
      const pending = this.store.run("UPDATE jobs SET pause_requested = 0 WHERE id = ? AND status = 'running' AND pause_requested = 1", id);
      return pending.changes === 1 ? "withdrawn" : "not_paused";
    });
  }

  // ---------------------------------------------------------------------------------- events

  addEvent(
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

  /** Newest first; undefined when `after` is not an event of the job. */
  events(jobId: string, after: string | undefined, limit: number): Page<JobEvent> | undefined {
    return this.#page<Stored<JobEvent, "data">, JobEvent>("job_events", EVENT_COLUMNS, "seq DESC", jobId, after, limit, toEvent);
  }

  /** Drops the metrics of steps after `step` (they are redone after a resume; all when 0). */
  dropMetricsAfter(jobId: string, step: number): void {
    this.store.run(
      "DELETE FROM job_events WHERE job_id = ? AND type = 'metrics' AND CAST(json_extract(data, '$.step') AS INTEGER) > ?",
      jobId,
      step,
    );
  }

  // ----------------------------------------------------------------------------- checkpoints

  /** Newest first; undefined when `after` is not a checkpoint of the job. */
  checkpoints(jobId: string, after: string | undefined, limit: number): Page<CheckpointRecord> | undefined {
    return this.#page<Stored<CheckpointRecord, "metrics" | "final">, CheckpointRecord>(
      "job_checkpoints",
      CHECKPOINT_COLUMNS,
      "step DESC, seq DESC",
      jobId,
      after,
      limit,
      toCheckpoint,
    );
  }

  /** Every checkpoint of the job, oldest first. */
  allCheckpoints(jobId: string): CheckpointRecord[] {
    return this.store.all<Stored<CheckpointRecord, "metrics" | "final">>(
      `SELECT ${CHECKPOINT_COLUMNS} FROM job_checkpoints WHERE job_id = ? ORDER BY step`,
      jobId,
    ).map(toCheckpoint);
  }

  /** Records that a model a job produced was deleted (it stays deleted after a restart). */
  markModelDeleted(modelId: string): void {
    this.store.run("INSERT OR IGNORE INTO deleted_models (model_id, deleted_at) VALUES (?, ?)", modelId, nowSeconds());
  }

  isModelDeleted(modelId: string): boolean {
    return this.store.get("SELECT 1 AS x FROM deleted_models WHERE model_id = ?", modelId) !== undefined;
  }

  /** The job and checkpoint folder behind a model a job produced (its result or one of its
   * checkpoints), if the caller may use it. */
  producedModel(caller: Caller, modelId: string): { job: JobRecord; dir: string } | undefined {
    const r = this.store.get<{ jobId: string; dir: string }>(
      `SELECT c.job_id AS jobId, c.dir AS dir FROM job_checkpoints c JOIN jobs j ON j.id = c.job_id
       WHERE c.model_id = ? OR (c.final = 1 AND j.fine_tuned_model = ? AND j.status = 'succeeded') LIMIT 1`,
      modelId,
      modelId,
    );
    const job = r && this.jobFor(caller, r.jobId);
    return job && r ? { job, dir: r.dir } : undefined;
  }

  /** The checkpoints a run can resume from (not the final adapter), newest first. */
  resumable(jobId: string): CheckpointRecord[] {
    return this.store.all<Stored<CheckpointRecord, "metrics" | "final">>(
      `SELECT ${CHECKPOINT_COLUMNS} FROM job_checkpoints WHERE job_id = ? AND final = 0 ORDER BY step DESC`,
      jobId,
    ).map(toCheckpoint);
  }

  /** Records a checkpoint (replacing one of the same step, written again after a resume). */
  addCheckpoint(c: Omit<CheckpointRecord, "id" | "createdAt">): void {
    this.store.run("DELETE FROM job_checkpoints WHERE job_id = ? AND step = ?", c.jobId, c.step);
    this.store.run(
      "INSERT INTO job_checkpoints (id, job_id, step, created_at, model_id, dir, metrics, final) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      newId("ftckpt"),
      c.jobId,
      c.step,
      nowSeconds(),
      c.modelId,
      c.dir,
      JSON.stringify(c.metrics),
      c.final ? 1 : 0,
    );
  }

  transaction<T>(fn: () => T): T {
    return this.store.transaction(fn);
  }

  /** A page of a job's events or checkpoints, newest first, after the row with id `after`. */
  #page<Row, T>(
    table: "job_events" | "job_checkpoints",
    columns: string,
    order: string,
    jobId: string,
    after: string | undefined,
    limit: number,
    map: (r: Row) => T,
  ): Page<T> | undefined {
    const params: (string | number)[] = [jobId];
    let cond = "";
    if (after) {
      const cursor = this.store.get<{ seq: number }>(`SELECT seq FROM ${table} WHERE id = ? AND job_id = ?`, after, jobId);
      if (!cursor) return undefined;
      cond = " AND seq < ?";
      params.push(cursor.seq);
    }
    const rows = this.store.all<Row>(
      `SELECT ${columns} FROM ${table} WHERE job_id = ?${cond} ORDER BY ${order} LIMIT ?`,
      ...params,
      limit + 1,
    );
    return { data: rows.slice(0, limit).map(map), hasMore: rows.length > limit };
  }
}
