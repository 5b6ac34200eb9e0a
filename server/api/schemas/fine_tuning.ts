// fine_tuning.ts — /v1/fine_tuning/jobs in OpenAI's shapes, with our hyperparameter extensions
// beside OpenAI's three (their schema lives with the jobs: server/jobs/hyperparameters.ts).
// Unknown fields anywhere in the request are rejected (400 naming them).
import { z } from "@hono/zod-openapi";
import {
  DpoHyperparametersSchema,
  HyperparametersSchema,
  ResolvedDpoHyperparametersSchema,
  ResolvedHyperparametersSchema,
} from "../../jobs/hyperparameters.ts";
import { EVENT_LEVELS, EVENT_TYPES, JOB_STATUSES, SUFFIX_RE } from "../../jobs/types.ts";

export const MethodSchema = z.object({
  type: z.enum(["supervised", "dpo", "reinforcement"]),
  supervised: z.object({ hyperparameters: HyperparametersSchema.optional() }).strict().optional(),
  dpo: z.object({ hyperparameters: DpoHyperparametersSchema.optional() }).strict().optional(),
  reinforcement: z.unknown().optional(),
}).strict().openapi("FineTuningMethod");

export const CreateJobSchema = z.object({
  model: z.string().min(1).max(256).openapi({ example: "tiny" }),
  training_file: z.string().min(1).max(128).openapi({ example: "file-abc123" }),
  validation_file: z.string().min(1).max(128).nullable().optional(),
  suffix: z.string().regex(SUFFIX_RE, "1-64 letters, digits, '.', '_', '-'").nullable().optional(),
  seed: z.number().int().min(0).max(2147483647).nullable().optional(),
  metadata: z.record(z.string().max(64), z.string().max(512)).nullable().optional().refine(
    (m) => !m || Object.keys(m).length <= 16,
    "at most 16 keys",
  ),
  method: MethodSchema.optional(),
  hyperparameters: HyperparametersSchema.optional().openapi({ description: "Deprecated: use method.supervised.hyperparameters." }),
  integrations: z.array(z.unknown()).max(0, "integrations are not supported").nullable().optional(),
}).strict().openapi("CreateFineTuningJobRequest");

export const JobSchema = z.object({
  id: z.string().openapi({ example: "ftjob-abc123" }),
  object: z.literal("fine_tuning.job"),
  created_at: z.number().int(),
  error: z.object({ code: z.string(), message: z.string(), param: z.string().nullable() }).nullable(),
  fine_tuned_model: z.string().nullable(),
  finished_at: z.number().int().nullable(),
  hyperparameters: z.object({ n_epochs: z.number().int(), batch_size: z.number().int(), learning_rate_multiplier: z.number() }),
  model: z.string(),
  organization_id: z.string().openapi({ description: "The tenant that owns the job." }),
  result_files: z.array(z.string()),
  seed: z.number().int(),
  status: z.enum(JOB_STATUSES),
  trained_tokens: z.number().int().nullable(),
  training_file: z.string(),
  validation_file: z.string().nullable(),
  user_provided_suffix: z.string().nullable(),
  estimated_finish: z.number().int().nullable(),
  integrations: z.array(z.unknown()),
  metadata: z.record(z.string(), z.string()).nullable(),
  method: z.union([
    z.object({ type: z.literal("supervised"), supervised: z.object({ hyperparameters: ResolvedHyperparametersSchema }) }),
    z.object({ type: z.literal("dpo"), dpo: z.object({ hyperparameters: ResolvedDpoHyperparametersSchema }) }),
  ]),
  step: z.number().int().openapi({ description: "Extension: optimizer steps done." }),
  total_steps: z.number().int().nullable().openapi({ description: "Extension: optimizer steps in the job (known once it runs)." }),
}).openapi("FineTuningJob");

export const JobListSchema = z.object({ object: z.literal("list"), data: z.array(JobSchema), has_more: z.boolean() }).openapi(
  "FineTuningJobList",
);

export const EventSchema = z.object({
  id: z.string(),
  object: z.literal("fine_tuning.job.event"),
  created_at: z.number().int(),
  level: z.enum(EVENT_LEVELS),
  message: z.string(),
  type: z.enum(EVENT_TYPES),
  data: z.record(z.string(), z.unknown()).optional().openapi({
    description:
      "Absent for messages. For metrics: step, total_steps, epoch, train_loss, learning_rate, grad_norm, tokens_per_second, valid_loss (when evaluated).",
  }),
}).openapi("FineTuningJobEvent");

export const EventListSchema = z.object({ object: z.literal("list"), data: z.array(EventSchema), has_more: z.boolean() }).openapi(
  "FineTuningJobEventList",
);

export const CheckpointSchema = z.object({
  id: z.string(),
  object: z.literal("fine_tuning.job.checkpoint"),
  created_at: z.number().int(),
  fine_tuned_model_checkpoint: z.string().openapi({ description: "A servable model id: ft:<base>:<suffix>:<job id>:ckpt-step-<N>." }),
  fine_tuning_job_id: z.string(),
  step_number: z.number().int(),
  metrics: z.record(z.string(), z.number()),
}).openapi("FineTuningJobCheckpoint");

export const CheckpointListSchema = z.object({
  object: z.literal("list"),
  data: z.array(CheckpointSchema),
  first_id: z.string().nullable(),
  last_id: z.string().nullable(),
  has_more: z.boolean(),
}).openapi("FineTuningJobCheckpointList");

export const PageQuerySchema = z.object({
  after: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

export const JobIdParam = z.object({
  fine_tuning_job_id: z.string().openapi({ param: { name: "fine_tuning_job_id", in: "path" }, example: "ftjob-abc123" }),
});
