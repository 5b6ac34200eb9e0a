// deps.ts — what the routes need from the rest of the server, passed in by main.ts (or a test).
import type { Tokenizer } from "../model/tokenizer.ts";
import type { EngineHost } from "../serving/host.ts";
import type { TokenizerPool } from "../serving/tokenizer_pool.ts";
import type { AdapterRegistry } from "../adapters/registry.ts";
import type { KeyStore } from "./auth.ts";
import type { Caller } from "../util/caller.ts";
import type { Metrics } from "./metrics.ts";
import type { TenantAdmission } from "./admission.ts";
import type { FileStore } from "../store/files.ts";
import type { JobService } from "../jobs/service.ts";

export interface AppDeps {
  host: EngineHost;
  /** The tokenizer, for decoding and vocabulary facts on the HTTP thread (cheap per token). */
  tokenizer: Tokenizer;
  /** Prompt tokenization (chat templates, encoding), off the HTTP thread. */
  tokenizers: TokenizerPool;
  registry: AdapterRegistry;
  keys: KeyStore;
  metrics: Metrics;
  /** Unix seconds the server started (the base model's `created`). */
  created: number;
  /** Requests that may wait beyond the running batch before 429 (default 256). */
  maxQueue: number;
  /** Per-tenant admission (max_concurrent_requests). */
  admission: TenantAdmission;
  /** Largest request body in bytes (default 64 MiB, for adapter uploads). */
  /** Largest JSON body (chat, completions, and every other JSON route). */
  bodyLimitBytes: number;
  /** Largest upload (multipart: /v1/files, /v1/adapters/upload). */
  uploadLimitBytes: number;
  /** A chat template for models without one. */
  chatTemplate: string | null;
  /** Uploaded files and fine-tuning jobs (absent: those routes are not served). */
  files?: FileStore;
  jobs?: JobService;
  /** Structured log sink (one JSON object per line); null: silent. */
  log: ((entry: Record<string, unknown>) => void) | null;
}

export interface AppEnv {
  /** recorded: the request's caller-describing fields (request_policy.ts), for its log line. */
  Variables: { principal: Caller; requestId: string; recorded: Record<string, unknown> | null };
}
