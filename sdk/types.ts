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
/** response_format: text, json_object, or json_schema (grammar-constrained output). */
export type ResponseFormat = Schemas["ResponseFormat"];
/** vLLM's structured_outputs extension (json, regex, choice, grammar, json_object). */
export type StructuredOutputs = NonNullable<Schemas["StructuredOutputs"]>;
/** A function tool (its parameters are a JSON schema). */
export type ChatCompletionTool = Schemas["Tool"];
export type ChatCompletionToolChoice = Schemas["ToolChoice"];
/** A tool call in a response's message (arguments: the model's JSON text). */
export type ChatCompletionMessageToolCall = Schemas["ToolCall"];
/** A piece of a tool call in a stream (index; id, type and name first; then arguments). */
export type ChatCompletionToolCallDelta = Schemas["ToolCallDelta"];
export type ChatLogprobs = Schemas["ChatLogprobs"];
/** One SSE chunk of a streamed chat completion (the last, with stream_options.include_usage,
 * carries usage and no choices). */
export type ChatCompletionChunk = Schemas["ChatCompletionChunk"];

// ---- responses (OpenAI's Responses API, stateless)
export type ResponseCreateParams = Schemas["ResponseCreateRequest"];
export type ResponseCreateParamsNonStreaming = ResponseCreateParams & { stream?: false | null };
export type ResponseCreateParamsStreaming = ResponseCreateParams & { stream: true };
export type Response = Schemas["Response"];
export type ResponseOutputItem = Schemas["ResponseOutputItem"];
export type ResponseUsage = Schemas["ResponseUsage"];
/** One event of a streamed response (`type` names it; sequence_number counts from 0). */
export type ResponseStreamEvent = Schemas["ResponseStreamEvent"];

// ---- completions
export type CompletionCreateParams = Schemas["CompletionRequest"];
export type CompletionCreateParamsNonStreaming = CompletionCreateParams & {
  stream?: false | null;
};
export type CompletionCreateParamsStreaming = CompletionCreateParams & {
  stream: true;
};
export type Completion = Schemas["Completion"];
/** Streamed completions are text_completion objects, each with the new text of its choice
 * (finish_reason null until a choice's last chunk). */
export type CompletionChunk = Schema<"CompletionChunk", Completion>;

// ---- models
export type Model = Schemas["Model"];
export type ModelDetail = Schemas["ModelDetail"];
export type ModelDeleted = Schemas["ModelDeleted"];
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

// ---- fine-tuning (the server's schemas: server/api/schemas/fine_tuning.ts, the hyperparameters'
// in server/jobs/hyperparameters.ts)
/** OpenAI's n_epochs, batch_size, learning_rate_multiplier and the server's extensions beside them. */
export type Hyperparameters = Schemas["FineTuningHyperparameters"];
/** DPO's hyperparameters: the supervised ones and beta. */
export type DpoHyperparameters = Schemas["FineTuningDpoHyperparameters"];
export type FineTuningMethod = Schemas["FineTuningMethod"];
/** The hyperparameters a job resolved (every extension filled in). */
export type ResolvedHyperparameters = Schemas["ResolvedFineTuningHyperparameters"];
export type ResolvedDpoHyperparameters = Schemas["ResolvedFineTuningDpoHyperparameters"];
export type FineTuningJob = Schemas["FineTuningJob"];
export type FineTuningJobStatus = FineTuningJob["status"];
export type FineTuningJobCreateParams = Schemas["CreateFineTuningJobRequest"];
export type FineTuningJobEvent = Schemas["FineTuningJobEvent"];
export type FineTuningJobCheckpoint = Schemas["FineTuningJobCheckpoint"];
export type FineTuningJobListParams = QueryOf<"/v1/fine_tuning/jobs", never> & {
  /** Only jobs whose metadata has these values (sent as metadata[key]=value). */
  metadata?: Record<string, string>;
};
export type FineTuningJobEventListParams = QueryOf<"/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", never>;
export type FineTuningJobCheckpointListParams = QueryOf<"/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", never>;

// ---- tokenizer and server (vLLM's /tokenize, /detokenize, /version: outside /v1)
export type TokenizeParams = Schemas["TokenizeRequest"];
export type MemoryPlanParams = Schemas["MemoryPlanRequest"];
export type MemoryPlan = Schemas["MemoryPlan"];
export type TokenizeResponse = Schemas["TokenizeResponse"];
export type DetokenizeParams = Schemas["DetokenizeRequest"];
export type DetokenizeResponse = Schemas["DetokenizeResponse"];
export type ServerVersion = Schemas["Version"];
