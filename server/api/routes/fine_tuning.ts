// fine_tuning.ts — /v1/fine_tuning/jobs (OpenAI's shapes): create, list (cursor pages), retrieve,
// cancel, events, checkpoints. Jobs belong to the caller's tenant; another tenant's job answers 404.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Caller } from "../../util/caller.ts";
import { ErrorSchema } from "../schemas/common.ts";
import {
  CheckpointListSchema,
  CreateJobSchema,
  EventListSchema,
  JobIdParam,
  JobListSchema,
  JobSchema,
  PageQuerySchema,
} from "../schemas/fine_tuning.ts";
import type { AppEnv } from "../deps.ts";
import { ClientError } from "../../util/errors.ts";
import type { JobService } from "../../jobs/service.ts";
import type { CheckpointRecord, JobEvent, JobRecord } from "../../jobs/types.ts";

export interface FineTuningDeps {
  jobs: JobService;
  /** Throws when the caller may not start another job (the jobs and adapters quotas). */
  checkQuota?(caller: Caller): void;
}

const err = (description: string) => ({ description, content: { "application/json": { schema: ErrorSchema } } });

export function jobObject(j: JobRecord) {
  const h = j.hyper;
  return {
    id: j.id,
    object: "fine_tuning.job" as const,
    created_at: j.createdAt,
    error: j.error,
    fine_tuned_model: j.fineTunedModel,
    finished_at: j.finishedAt,
    hyperparameters: { n_epochs: h.n_epochs, batch_size: h.batch_size, learning_rate_multiplier: h.learning_rate_multiplier },
    // the model the caller asked for: the base, or the fine-tuned model the job continues from
    model: j.initFrom?.model ?? j.model,
    organization_id: j.tenant,
    result_files: j.resultFiles,
    seed: j.seed,
    status: j.status,
    trained_tokens: j.status === "succeeded" ? j.trainedTokens : null,
    training_file: j.trainingFile,
    validation_file: j.validationFile,
    user_provided_suffix: j.suffix,
    estimated_finish: estimatedFinish(j),
    integrations: [] as unknown[],
    metadata: j.metadata,
    method: j.method === "dpo"
      ? { type: "dpo" as const, dpo: { hyperparameters: h } }
      : { type: "supervised" as const, supervised: { hyperparameters: h } },
    step: j.step,
    total_steps: j.totalSteps,
  };
}

/** A running job's finish time, from its pace so far (seconds since it started per step done). */
function estimatedFinish(j: JobRecord): number | null {
  if (j.status !== "running" || j.startedAt === null || j.totalSteps === null || j.step <= 0) return null;
  const now = Math.floor(Date.now() / 1000);
  return now + Math.round(((now - j.startedAt) / j.step) * (j.totalSteps - j.step));
}

function eventObject(e: JobEvent) {
  return {
    id: e.id,
    object: "fine_tuning.job.event" as const,
    created_at: e.createdAt,
    level: e.level,
    message: e.message,
    type: e.type,
    ...(e.data ? { data: e.data } : {}), // OpenAI's schema: an object or absent
  };
}

function checkpointObject(k: CheckpointRecord) {
  return {
    id: k.id,
    object: "fine_tuning.job.checkpoint" as const,
    created_at: k.createdAt,
    fine_tuned_model_checkpoint: k.modelId,
    fine_tuning_job_id: k.jobId,
    step_number: k.step,
    metrics: k.metrics,
  };
}

const routes = {
  create: createRoute({
    method: "post",
    path: "/v1/fine_tuning/jobs",
    tags: ["Fine-tuning"],
    summary: "Creates a fine-tuning job (LoRA on the frozen 4-bit base); its result is servable as ft:<base>:<suffix>:<job id>.",
    request: { body: { required: true, content: { "application/json": { schema: CreateJobSchema } } } },
    responses: {
      200: { description: "The job", content: { "application/json": { schema: JobSchema } } },
      400: err("Invalid request (the param names the field)"),
      401: err("Missing or wrong API key"),
    },
  }),
  list: createRoute({
    method: "get",
    path: "/v1/fine_tuning/jobs",
    tags: ["Fine-tuning"],
    summary: "Lists the caller's jobs, newest first (cursor pages: after, limit; metadata[k]=v filters).",
    request: { query: PageQuerySchema },
    responses: {
      200: { description: "Jobs", content: { "application/json": { schema: JobListSchema } } },
      400: err("Invalid cursor"),
      401: err("Missing or wrong API key"),
    },
  }),
  get: createRoute({
    method: "get",
    path: "/v1/fine_tuning/jobs/{fine_tuning_job_id}",
    tags: ["Fine-tuning"],
    summary: "One job.",
    request: { params: JobIdParam },
    responses: {
      200: { description: "The job", content: { "application/json": { schema: JobSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such job"),
    },
  }),
  cancel: createRoute({
    method: "post",
    path: "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
    tags: ["Fine-tuning"],
    summary: "Cancels a job (a running one stops after its current micro-batch).",
    request: { params: JobIdParam },
    responses: {
      200: { description: "The job", content: { "application/json": { schema: JobSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such job"),
      409: err("The job has already finished"),
    },
  }),
  pause: createRoute({
    method: "post",
    path: "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause",
    tags: ["Fine-tuning"],
    summary: "Pauses a job: a waiting one at once, a running one after a checkpoint at its current step (status paused).",
    request: { params: JobIdParam },
    responses: {
      200: { description: "The job", content: { "application/json": { schema: JobSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such job"),
      409: err("The job has finished or is paused already"),
    },
  }),
  resume: createRoute({
    method: "post",
    path: "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume",
    tags: ["Fine-tuning"],
    summary: "Resumes a paused job from its last checkpoint (or withdraws a pause not yet taken).",
    request: { params: JobIdParam },
    responses: {
      200: { description: "The job", content: { "application/json": { schema: JobSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such job"),
      409: err("The job is not paused"),
    },
  }),
  events: createRoute({
    method: "get",
    path: "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
    tags: ["Fine-tuning"],
    summary: "The job's events, newest first: messages, and metrics per step (loss, learning rate, tokens/s, validation loss).",
    request: { params: JobIdParam, query: PageQuerySchema },
    responses: {
      200: { description: "Events", content: { "application/json": { schema: EventListSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such job"),
    },
  }),
  checkpoints: createRoute({
    method: "get",
    path: "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
    tags: ["Fine-tuning"],
    summary: "The job's checkpoints, newest first; each is a servable model.",
    request: { params: JobIdParam, query: PageQuerySchema },
    responses: {
      200: { description: "Checkpoints", content: { "application/json": { schema: CheckpointListSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such job"),
    },
  }),
};

export function registerFineTuningRoutes(app: OpenAPIHono<AppEnv>, deps: FineTuningDeps): void {
  const jobs = deps.jobs;

  app.openapi(routes.create, (c) => {
    const body = c.req.valid("json");
    const method = body.method?.type ?? "supervised";
    if (method === "reinforcement") {
      throw new ClientError(400, 'method.type "reinforcement" is not supported (supervised or dpo)', "unsupported_value", "method.type");
    }
    const other = method === "dpo" ? "supervised" : "dpo";
    if (body.method?.[other] !== undefined) {
      throw new ClientError(400, `method.${other} does not go with method.type "${method}"`, "invalid_value", `method.${other}`);
    }
    const fromMethod = body.method?.[method]?.hyperparameters;
    if (body.hyperparameters && (fromMethod || method === "dpo")) {
      throw new ClientError(
        400,
        `give the hyperparameters in method.${method}.hyperparameters` +
          (method === "dpo"
            ? " (the deprecated top-level hyperparameters are for supervised jobs)"
            : ", not also in the deprecated top-level hyperparameters"),
        "invalid_value",
        "hyperparameters",
      );
    }
    deps.checkQuota?.(c.get("principal"));
    const job = jobs.create(c.get("principal"), { ...body, method, hyperparameters: fromMethod ?? body.hyperparameters });
    return c.json(jobObject(job), 200);
  });

  app.openapi(routes.list, (c) => {
    const q = c.req.valid("query");
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(c.req.query())) {
      const m = /^metadata\[(.+)\]$/.exec(k);
      if (m) metadata[m[1]] = v;
    }
    // a job has at most 16 metadata keys (OpenAI's limit), so more filters can match nothing; they
    // would only build an ever larger query
    if (Object.keys(metadata).length > 16) {
      throw new ClientError(400, "at most 16 metadata[key]=value filters", "invalid_value", "metadata");
    }
    const page = jobs.list(c.get("principal"), { ...q, metadata });
    return c.json({ object: "list" as const, data: page.data.map(jobObject), has_more: page.hasMore }, 200);
  });

  app.openapi(routes.get, (c) => {
    const { fine_tuning_job_id } = c.req.valid("param");
    return c.json(jobObject(jobs.require(c.get("principal"), fine_tuning_job_id)), 200);
  });

  app.openapi(routes.cancel, (c) => {
    const { fine_tuning_job_id } = c.req.valid("param");
    return c.json(jobObject(jobs.cancel(c.get("principal"), fine_tuning_job_id)), 200);
  });

  app.openapi(routes.pause, (c) => {
    const { fine_tuning_job_id } = c.req.valid("param");
    return c.json(jobObject(jobs.pause(c.get("principal"), fine_tuning_job_id)), 200);
  });

  app.openapi(routes.resume, (c) => {
    const { fine_tuning_job_id } = c.req.valid("param");
    return c.json(jobObject(jobs.resume(c.get("principal"), fine_tuning_job_id)), 200);
  });

  app.openapi(routes.events, (c) => {
    const { fine_tuning_job_id } = c.req.valid("param");
    const page = jobs.events(c.get("principal"), fine_tuning_job_id, c.req.valid("query"));
    return c.json({ object: "list" as const, data: page.data.map(eventObject), has_more: page.hasMore }, 200);
  });

  app.openapi(routes.checkpoints, (c) => {
    const { fine_tuning_job_id } = c.req.valid("param");
    const page = jobs.checkpoints(c.get("principal"), fine_tuning_job_id, c.req.valid("query"));
    const data = page.data.map(checkpointObject);
    return c.json({
      object: "list" as const,
      data,
      first_id: data[0]?.id ?? null,
      last_id: data.at(-1)?.id ?? null,
      has_more: page.hasMore,
    }, 200);
  });
}
