// types.ts — the SDK's named types. Every request and response shape comes from the generated
// types (generated/api.ts, made from the server's own zod schemas by `deno task sdk`); a shape the
// server's document does not (yet) name falls back to the OpenAI-documented shape written here, and
// switches to the generated one by itself once the server registers a schema of that name.
import type { components } from "./generated/api.ts";

type Schemas = components["schemas"];
/** The generated schema `N` when the server's document has it, else the fallback `F`. */
type Schema<N extends string, F> = N extends keyof Schemas ? Schemas[N] : F;

export type { components, paths } from "./generated/api.ts";

// ---- errors and usage
export type ErrorBody = Schemas["Error"];
export type Usage = Schemas["Usage"];

// ---- chat
export type ChatCompletionMessageParam = Schemas["ChatMessage"];
export type ChatCompletionCreateParams = Schemas["ChatCompletionRequest"];
export type ChatCompletionCreateParamsNonStreaming = ChatCompletionCreateParams & { stream?: false | null };
export type ChatCompletionCreateParamsStreaming = ChatCompletionCreateParams & { stream: true };
export type ChatCompletion = Schemas["ChatCompletion"];
export type ChatLogprobs = Schemas["ChatLogprobs"];
export type ChatCompletionChunk = Schema<"ChatCompletionChunk", {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  system_fingerprint?: string;
  choices: {
    index: number;
    delta: { role?: "assistant"; content?: string };
    logprobs: ChatLogprobs | null;
    finish_reason: ChatCompletion["choices"][number]["finish_reason"];
  }[];
  /** Only on the last chunk, when stream_options.include_usage is true (null on the others). */
  usage?: Usage | null;
}>;

// ---- completions
export type CompletionCreateParams = Schemas["CompletionRequest"];
export type CompletionCreateParamsNonStreaming = CompletionCreateParams & { stream?: false | null };
export type CompletionCreateParamsStreaming = CompletionCreateParams & { stream: true };
export type Completion = Schemas["Completion"];
/** Streamed completions are text_completion objects, each with the new text of its choice. */
export type CompletionChunk = Schema<"CompletionChunk", Completion>;

// ---- models
export type Model = Schemas["Model"];
export type ModelDetail = Schemas["ModelDetail"];
export type ModelList = Schemas["ModelList"];

// ---- adapters
export type Adapter = Schemas["Adapter"];
export type AdapterDeleted = Schemas["AdapterDeleted"];
export type AdapterCreateParams = Schemas["CreateAdapterRequest"];
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
export type FileObject = Schema<"FileObject", {
  id: string;
  object: "file";
  bytes: number;
  created_at: number;
  filename: string;
  purpose: string;
  status?: string;
  status_details?: string | null;
}>;
export type FileDeleted = Schema<"FileDeleted", { id: string; object: "file"; deleted: boolean }>;
export interface FileCreateParams {
  /** The JSONL file: a File/Blob, bytes or text (name it with `filename`, or use toFile). */
  file: Uploadable;
  purpose: "fine-tune" | (string & {});
  /** The file name to send (default: the File's name, else "file.jsonl"). */
  filename?: string;
}
export interface FileListParams {
  purpose?: string;
  after?: string;
  limit?: number;
  order?: "asc" | "desc";
}

// ---- fine-tuning
export type FineTuningJobStatus = "validating_files" | "queued" | "running" | "succeeded" | "failed" | "cancelled";
export type Hyperparameters = {
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
  optimizer?: "adamw" | "paged_adamw" | "paged_adamw_8bit";
  quant?: "nf4" | "none";
  full_finetune?: boolean;
};
export type FineTuningJob = Schema<"FineTuningJob", {
  id: string;
  object: "fine_tuning.job";
  created_at: number;
  finished_at: number | null;
  model: string;
  fine_tuned_model: string | null;
  organization_id?: string;
  status: FineTuningJobStatus;
  training_file: string;
  validation_file: string | null;
  result_files?: string[];
  trained_tokens: number | null;
  error: { message: string; code: string | null; param: string | null } | null;
  hyperparameters?: Hyperparameters;
  method?: { type: "supervised"; supervised?: { hyperparameters?: Hyperparameters } };
  seed: number;
  suffix?: string | null;
  metadata?: Record<string, string> | null;
  estimated_finish?: number | null;
}>;
export type FineTuningJobCreateParams = Schema<"CreateFineTuningJobRequest", {
  model: string;
  training_file: string;
  validation_file?: string | null;
  suffix?: string | null;
  seed?: number | null;
  metadata?: Record<string, string> | null;
  method?: { type: "supervised"; supervised?: { hyperparameters?: Hyperparameters } };
  /** Deprecated by OpenAI in favour of method.supervised.hyperparameters; accepted too. */
  hyperparameters?: Hyperparameters;
}>;
export type FineTuningJobEvent = Schema<"FineTuningJobEvent", {
  id: string;
  object: "fine_tuning.job.event";
  created_at: number;
  level: "info" | "warn" | "error";
  message: string;
  type?: "message" | "metrics";
  data?: Record<string, unknown> | null;
}>;
export type FineTuningJobCheckpoint = Schema<"FineTuningJobCheckpoint", {
  id: string;
  object: "fine_tuning.job.checkpoint";
  created_at: number;
  fine_tuned_model_checkpoint: string;
  fine_tuning_job_id: string;
  step_number: number;
  metrics: Record<string, number | null>;
}>;
export interface FineTuningJobListParams {
  after?: string;
  limit?: number;
  metadata?: Record<string, string>;
}
export interface FineTuningJobEventListParams {
  after?: string;
  limit?: number;
}
export type FineTuningJobCheckpointListParams = FineTuningJobEventListParams;
