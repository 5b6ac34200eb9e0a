// types.ts — the fine-tuning job as the rest of the server sees it: statuses (validating_files →
// queued → running → succeeded | failed | cancelled), the job record, its events (messages and
// metrics per step) and checkpoints (each a servable model), the create request, pages, and the
// names a job gives its models.
import type { Hyperparameters, HyperparametersInput, JobMethod } from "./hyperparameters.ts";

// "paused" is OpenAI's status of a paused job (POST …/pause); its published schema's enum predates it
export const JOB_STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

export const EVENT_LEVELS = ["info", "warn", "error"] as const;
export const EVENT_TYPES = ["message", "metrics"] as const;

/** A fine-tuned model a job starts from, and the PEFT folder holding its weights. */
export interface InitFrom {
  model: string;
  dir: string;
}

export interface CreateJobRequest {
  model: string;
  training_file: string;
  validation_file?: string | null;
  suffix?: string | null;
  seed?: number | null;
  metadata?: Record<string, string> | null;
  /** Supervised (default) or DPO on preference pairs. */
  method?: JobMethod;
  hyperparameters?: HyperparametersInput;
}

/** Why a job failed (OpenAI's job error). */
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
  method: JobMethod;
  /** The fine-tuned model (or checkpoint) the job continues from: its LoRA weights start the run. */
  initFrom: InitFrom | null;
  hyper: Hyperparameters;
  /** Files the job produced (its step-metrics CSV), once it succeeded. */
  resultFiles: string[];
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
  level: (typeof EVENT_LEVELS)[number];
  type: (typeof EVENT_TYPES)[number];
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

/** A cursor page: `after` is the last id of the previous page. */
export interface PageOptions {
  after?: string;
  limit?: number;
}

export interface Page<T> {
  data: T[];
  hasMore: boolean;
}

/** A job's suffix: 1-64 letters, digits, '.', '_', '-'. */
export const SUFFIX_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** `ft:<base>:<suffix>:<job id>` (the suffix may be empty, as in OpenAI's names). */
export function fineTunedModelId(base: string, suffix: string | null, jobId: string): string {
  return `ft:${base}:${suffix ?? ""}:${jobId}`;
}

/** The servable model of the checkpoint at `step`. */
export function checkpointModelId(fineTunedModel: string, step: number): string {
  return `${fineTunedModel}:ckpt-step-${step}`;
}

/** Whether a model id names a job's checkpoint (checkpointModelId). */
export function isCheckpointModelId(id: string): boolean {
  return id.startsWith("ft:") && /:ckpt-step-\d+$/.test(id);
}
