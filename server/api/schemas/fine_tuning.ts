// fine_tuning.ts — /v1/fine_tuning/jobs in OpenAI's shapes, with our hyperparameter extensions
// beside OpenAI's three. Unknown fields anywhere in the request are rejected (400 naming them).
import { z } from "@hono/zod-openapi";

const auto = (n: z.ZodNumber) => z.union([z.literal("auto"), n]);

export const HyperparametersSchema = z.object({
  n_epochs: auto(z.number().int().min(1).max(50)).optional().openapi({ description: 'Passes over the training data ("auto": 3).' }),
  batch_size: auto(z.number().int().min(1).max(256)).optional().openapi({
    description: 'Sequences per micro-batch (with packing: rows of max_seq_len tokens) ("auto": up to 4).',
  }),
  learning_rate_multiplier: auto(z.number().gt(0).max(10)).optional().openapi({ description: 'Scales learning_rate ("auto": 1).' }),
  learning_rate: z.number().gt(0).max(1).optional().openapi({
    description: "Extension: peak learning rate before the multiplier (default 2e-4).",
  }),
  lora_r: z.number().int().min(1).max(1024).optional().openapi({ description: "Extension: LoRA rank (default 16)." }),
  lora_alpha: z.number().gt(0).max(4096).optional().openapi({ description: "Extension: LoRA alpha (default 2 × r)." }),
  lora_dropout: z.number().min(0).lt(1).optional().openapi({ description: "Extension: dropout on the LoRA input (default 0.05)." }),
  target_modules: z.union([
    z.literal("all-linear"),
    z.array(z.enum(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])).min(1).max(7),
  ])
    .optional().openapi({ description: 'Extension: modules that get LoRA (default "all-linear").' }),
  use_rslora: z.boolean().optional().openapi({ description: "Extension: scale by alpha/√r instead of alpha/r." }),
  warmup_ratio: z.number().min(0).lt(1).optional().openapi({
    description: "Extension: fraction of steps of linear warmup (default 0.03).",
  }),
  lr_scheduler: z.enum(["linear", "cosine", "constant"]).optional().openapi({
    description: "Extension: decay after warmup (default linear).",
  }),
  max_grad_norm: z.number().min(0).max(1e4).optional().openapi({
    description: "Extension: global gradient-norm clipping (0: off; default 1).",
  }),
  gradient_accumulation_steps: z.number().int().min(1).max(1024).optional().openapi({
    description: "Extension: micro-batches per optimizer step (default 1).",
  }),
  max_seq_len: z.number().int().min(8).max(131072).optional().openapi({
    description: "Extension: longest sequence, in tokens (default min(1024, the model's)).",
  }),
  packing: z.boolean().optional().openapi({ description: "Extension: pack examples into rows (no attention across them; default true)." }),
  train_on_inputs: z.boolean().optional().openapi({
    description: "Extension: take the loss on every token, not only the assistant's (default false).",
  }),
  optimizer: z.enum(["adamw", "paged_adamw", "paged_adamw_8bit"]).optional().openapi({ description: "Extension: default paged_adamw." }),
  quant: z.enum(["nf4", "none"]).optional().openapi({
    description: "Extension: the base's storage: nf4 (QLoRA, default) or none (16/32-bit LoRA).",
  }),
  full_finetune: z.boolean().optional().openapi({ description: "Extension: not supported (LoRA only); true is a 400." }),
  weight_decay: z.number().min(0).max(1).optional().openapi({ description: "Extension: AdamW weight decay (default 0)." }),
  checkpoint_every: auto(z.number().int().min(0).max(1e6)).optional().openapi({
    description: 'Extension: steps between checkpoints ("auto"/0: about 5 per job).',
  }),
}).strict().openapi("FineTuningHyperparameters");

export const MethodSchema = z.object({
  type: z.enum(["supervised", "dpo", "reinforcement"]),
  supervised: z.object({ hyperparameters: HyperparametersSchema.optional() }).strict().optional(),
  dpo: z.unknown().optional(),
  reinforcement: z.unknown().optional(),
}).strict().openapi("FineTuningMethod");

export const CreateJobSchema = z.object({
  model: z.string().min(1).max(256).openapi({ example: "tiny" }),
  training_file: z.string().min(1).max(128).openapi({ example: "file-abc123" }),
  validation_file: z.string().min(1).max(128).nullable().optional(),
  suffix: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_', '-'").nullable().optional(),
  seed: z.number().int().min(0).max(2147483647).nullable().optional(),
  metadata: z.record(z.string().max(64), z.string().max(512)).nullable().optional().refine(
    (m) => !m || Object.keys(m).length <= 16,
    "at most 16 keys",
  ),
  method: MethodSchema.optional(),
  hyperparameters: HyperparametersSchema.optional().openapi({ description: "Deprecated: use method.supervised.hyperparameters." }),
  integrations: z.array(z.unknown()).max(0, "integrations are not supported").nullable().optional(),
}).strict().openapi("CreateFineTuningJobRequest");

const ResolvedHyperSchema = z.object({
  n_epochs: z.number().int(),
  batch_size: z.number().int(),
  learning_rate_multiplier: z.number(),
  learning_rate: z.number(),
  lora_r: z.number().int(),
  lora_alpha: z.number(),
  lora_dropout: z.number(),
  target_modules: z.array(z.string()),
  use_rslora: z.boolean(),
  warmup_ratio: z.number(),
  lr_scheduler: z.string(),
  max_grad_norm: z.number(),
  gradient_accumulation_steps: z.number().int(),
  max_seq_len: z.number().int(),
  packing: z.boolean(),
  train_on_inputs: z.boolean(),
  optimizer: z.string(),
  quant: z.string(),
  full_finetune: z.boolean(),
  weight_decay: z.number(),
  checkpoint_every: z.number().int(),
}).openapi("ResolvedFineTuningHyperparameters");

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
  status: z.enum(["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]),
  trained_tokens: z.number().int().nullable(),
  training_file: z.string(),
  validation_file: z.string().nullable(),
  user_provided_suffix: z.string().nullable(),
  estimated_finish: z.number().int().nullable(),
  integrations: z.array(z.unknown()),
  metadata: z.record(z.string(), z.string()).nullable(),
  method: z.object({ type: z.literal("supervised"), supervised: z.object({ hyperparameters: ResolvedHyperSchema }) }),
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
  level: z.enum(["info", "warn", "error"]),
  message: z.string(),
  type: z.enum(["message", "metrics"]),
  data: z.record(z.string(), z.unknown()).nullable().openapi({
    description:
      "For metrics: step, total_steps, epoch, train_loss, learning_rate, grad_norm, tokens_per_second, valid_loss (when evaluated).",
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
