// mod.ts — the SDK's entry point: the client, its errors, Stream, pages and every named type.
//
//   import { QloraClient } from "@qlora/sdk";
//   const client = new QloraClient({ baseURL: "http://127.0.0.1:8000/v1" });
//   for await (const chunk of await client.chat.completions.create({ model: "tiny", messages, stream: true })) { … }
export { DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_MS, QloraClient, QloraClient as default, VERSION } from "./client.ts";
export type { ClientOptions } from "./client.ts";
export { APIPromise, backoffMs, retryAfterMs } from "./core.ts";
export type { Fetch, RequestOptions } from "./core.ts";
export {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  QloraError,
  RateLimitError,
  UnprocessableEntityError,
} from "./errors.ts";
export type { ErrorObject } from "./errors.ts";
export { iterSSE, SSEDecoder, Stream } from "./streaming.ts";
export type { ServerSentEvent } from "./streaming.ts";
export { AbstractPage, CursorPage, Page, PagePromise } from "./pagination.ts";
export type { CursorPageParams } from "./pagination.ts";
export { toFile } from "./uploads.ts";
export { TERMINAL_STATUSES } from "./resources/fine_tuning.ts";
export type { WaitOptions } from "./resources/fine_tuning.ts";
export { Chat, ChatCompletions, schemaResponseFormat } from "./resources/chat.ts";
export type { ParseableResponseFormat, ParsedChatCompletion, SchemaLike } from "./resources/chat.ts";
export { Completions } from "./resources/completions.ts";
export { outputText, Responses } from "./resources/responses.ts";
export { Models } from "./resources/models.ts";
export { Adapters } from "./resources/adapters.ts";
export { Files } from "./resources/files.ts";
export { FineTuning, Jobs } from "./resources/fine_tuning.ts";
export { Tokenizer } from "./resources/tokenizer.ts";
export type * from "./types.ts";
