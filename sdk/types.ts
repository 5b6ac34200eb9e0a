// types.ts — the SDK's named types. Every request and response shape comes from the generated
// types (generated/api.ts, made from the server's own zod schemas by `deno task sdk`); a shape the
// server's document does not (yet) name falls back to the OpenAI-documented shape written here, and
// switches to the generated one by itself once the server registers a schema of that name.
import type { components, paths } from "./generated/api.ts";

type Schemas = components["schemas"];
/** The generated schema `N` when the server's document has it, else the fallback `F`. */
type Schema<N extends string, F> = N extends keyof Schemas ? Schemas[N] : F;
/** The query parameters of GET `P` when the server's document has that path, else the fallback `F`. */
type QueryOf<P extends string, F> = P extends keyof paths
  ? paths[P] extends { get: { parameters: { query?: infer Q } } } ? NonNullable<Q> : F
  : F;

export type { components, paths } from "./generated/api.ts";

// ---- errors and usage
export type ErrorBody = Schemas["Error"];
export type Usage = Schemas["Usage"];

// ---- chat
export type ChatCompletionMessageParam = Schemas["ChatMessage"];
export type ChatCompletionCreateParams = Schemas["ChatCompletionRequest"];
export type ChatCompletionCreateParamsNonStreaming =
  & ChatCompletionCreateParams
  & { stream?: false | null };
export type ChatCompletionCreateParamsStreaming = ChatCompletionCreateParams & {
  stream: true;
};
export type ChatCompletion = Schemas["ChatCompletion"];
export type ChatLogprobs = Schemas["ChatLogprobs"];
/** One SSE chunk of a streamed chat completion (the last, with stream_options.include_usage,
 * carries usage and no choices). */
export type ChatCompletionChunk = Schemas["ChatCompletionChunk"];

// ---- completions
export type CompletionCreateParams = Schemas["CompletionRequest"];
export type CompletionCreateParamsNonStreaming = CompletionCreateParams & {
  stream?: false | null;
};
export type CompletionCreateParamsStreaming = CompletionCreateParams & {
  stream: true;
};
export type Completion = Schemas["Completion"];
/** Streamed completions are text_completion objects, each with the new text of its choice. */
export type CompletionChunk = Completion;

// ---- models
export type Model = Schemas["Model"];
export type ModelDetail = Schemas["ModelDetail"];
export type ModelList = Schemas["ModelList"];

// ---- adapters
export type Adapter = Schemas["Adapter"];
export type AdapterDeleted = Schemas["AdapterDeleted"];
export type AdapterCreateParams = Schemas["CreateAdapterRequest"];
export type LoadLoraAdapterParams = Schemas["LoadLoraAdapterRequest"];
export type UnloadLoraAdapterParams = Schemas["UnloadLoraAdapterRequest"];
export interface AdapterUploadParams {
  id: string;
  /** adapter_config.json (a Blob/File, bytes, or the JSON text or object). */
  adapter_config: Uploadable | Record<string, unknown>;
  /** adapter_model.safetensors. */
  adapter_model: Uploadable;
  /** Admin only: register it for this tenant. */
  tenant?: string;
}

/** What an upload accepts: a Blob or File, bytes, or text. */
export type Uploadable = Blob | ArrayBuffer | ArrayBufferView | string;

// ---- files
export type FileObject = Schemas["FileObject"];
export type FileDeleted = Schemas["FileDeleted"];
export interface FileCreateParams {
  /** The JSONL file: a File/Blob, bytes or text (name it with `filename`, or use toFile). */
  file: Uploadable;
  purpose: "fine-tune" | (string & Record<never, never>);
  /** The file name to send (default: the File's name, else "file.jsonl"). */
  filename?: string;
}
export type FileListParams = NonNullable<paths["/v1/files"]["get"]["parameters"]["query"]>;

// ---- fine-tuning (fallbacks: the server's schemas in server/api/schemas/fine_tuning.ts)
export type FineTuningJobStatus = "validating_files" | "queued" | "running" | "succeeded" | "failed" | "cancelled";
type Auto<T> = "auto" | T;
/** OpenAI's n_epochs, batch_size, learning_rate_multiplier and the server's extensions beside them. */
export type Hyperparameters = Schema<"FineTuningHyperparameters", {
  n_epochs?: Auto<number>;
  batch_size?: Auto<number>;
  learning_rate_multiplier?: Auto<number>;
  learning_rate?: number;
  lora_r?: number;
  lora_alpha?: number;
  lora_dropout?: number;
  target_modules?: "all-linear" | ("q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj")[];
  use_rslora?: boolean;
  warmup_ratio?: number;
  lr_scheduler?: "linear" | "cosine" | "constant";
  max_grad_norm?: number;
  gradient_accumulation_steps?: number;
  max_seq_len?: number;
  packing?: boolean;
  train_on_inputs?: boolean;
  optimizer?: "adamw" | "paged_adamw" | "paged_adamw_8bit";
  quant?: "nf4" | "none";
  full_finetune?: boolean;
  weight_decay?: number;
  checkpoint_every?: Auto<number>;
}>;
export type FineTuningMethod = Schema<"FineTuningMethod", {
  type: "supervised" | "dpo" | "reinforcement";
  supervised?: { hyperparameters?: Hyperparameters };
  dpo?: unknown;
  reinforcement?: unknown;
}>;
/** The hyperparameters a job resolved (every extension filled in). */
export type ResolvedHyperparameters = Schema<"ResolvedFineTuningHyperparameters", {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
  learning_rate: number;
  lora_r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
  use_rslora: boolean;
  warmup_ratio: number;
  lr_scheduler: string;
  max_grad_norm: number;
  gradient_accumulation_steps: number;
  max_seq_len: number;
  packing: boolean;
  train_on_inputs: boolean;
  optimizer: string;
  quant: string;
  full_finetune: boolean;
  weight_decay: number;
  checkpoint_every: number;
}>;
export type FineTuningJob = Schema<"FineTuningJob", {
  id: string;
  object: "fine_tuning.job";
  created_at: number;
  error: { code: string; message: string; param: string | null } | null;
  fine_tuned_model: string | null;
  finished_at: number | null;
  hyperparameters: { n_epochs: number; batch_size: number; learning_rate_multiplier: number };
  model: string;
  /** The tenant that owns the job. */
  organization_id: string;
  result_files: string[];
  seed: number;
  status: FineTuningJobStatus;
  trained_tokens: number | null;
  training_file: string;
  validation_file: string | null;
  user_provided_suffix: string | null;
  estimated_finish: number | null;
  integrations: unknown[];
  metadata: Record<string, string> | null;
  method: { type: "supervised"; supervised: { hyperparameters: ResolvedHyperparameters } };
  /** Extension: optimizer steps done. */
  step: number;
  /** Extension: optimizer steps in the job (known once it runs). */
  total_steps: number | null;
}>;
export type FineTuningJobCreateParams = Schema<"CreateFineTuningJobRequest", {
  model: string;
  training_file: string;
  validation_file?: string | null;
  suffix?: string | null;
  seed?: number | null;
  metadata?: Record<string, string> | null;
  method?: FineTuningMethod;
  /** Deprecated: use method.supervised.hyperparameters. */
  hyperparameters?: Hyperparameters;
  integrations?: unknown[] | null;
}>;
export type FineTuningJobEvent = Schema<"FineTuningJobEvent", {
  id: string;
  object: "fine_tuning.job.event";
  created_at: number;
  level: "info" | "warn" | "error";
  message: string;
  type: "message" | "metrics";
  /** For metrics: step, total_steps, epoch, train_loss, learning_rate, grad_norm, tokens_per_second, valid_loss (when evaluated). */
  data: Record<string, unknown> | null;
}>;
export type FineTuningJobCheckpoint = Schema<"FineTuningJobCheckpoint", {
  id: string;
  object: "fine_tuning.job.checkpoint";
  created_at: number;
  /** A servable model id: ft:<base>:<suffix>:<job id>:ckpt-step-<N>. */
  fine_tuned_model_checkpoint: string;
  fine_tuning_job_id: string;
  step_number: number;
  metrics: Record<string, number>;
}>;
export type FineTuningJobListParams = QueryOf<"/v1/fine_tuning/jobs", { after?: string; limit?: number }> & {
  /** Only jobs whose metadata has these values (sent as metadata[key]=value). */
  metadata?: Record<string, string>;
};
export type FineTuningJobEventListParams = QueryOf<"/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", {
  after?: string;
  limit?: number;
}>;
export type FineTuningJobCheckpointListParams = QueryOf<"/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", {
  after?: string;
  limit?: number;
}>;
