// client.ts — QloraClient: the entry point, shaped like openai-node's client.
//
//   import { QloraClient } from "@qlora/sdk";
//   const client = new QloraClient({ baseURL: "http://127.0.0.1:8000/v1", apiKey: "sk-…" });
//   const done = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }] });
//
// Options fall back to QLORA_API_KEY / QLORA_BASE_URL where the runtime exposes an environment
// (Node; Deno with --allow-env); in browsers pass them explicitly.
import {
  APIPromise,
  type ClientCore,
  type Fetch,
  type FinalRequest,
  makeRequest,
  parseBody,
  readEnv,
  type RequestOptions,
} from "./core.ts";
import { Stream } from "./streaming.ts";
import { type AbstractPage, type PagePromise, requestPage } from "./pagination.ts";
import { Chat } from "./resources/chat.ts";
import { Completions } from "./resources/completions.ts";
import { Responses } from "./resources/responses.ts";
import { Models } from "./resources/models.ts";
import { Adapters } from "./resources/adapters.ts";
import { Files } from "./resources/files.ts";
import { FineTuning } from "./resources/fine_tuning.ts";
import { Tokenizer } from "./resources/tokenizer.ts";

export const VERSION = "0.1.0";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1";
export const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
export const DEFAULT_MAX_RETRIES = 2;

export interface ClientOptions {
  /** Sent as `Authorization: Bearer <apiKey>` (default: QLORA_API_KEY; none for a keyless local server). */
  apiKey?: string | null;
  /** The API root including /v1 (default: QLORA_BASE_URL, else http://127.0.0.1:8000/v1). */
  baseURL?: string | null;
  /** Milliseconds to wait for each response (default 10 minutes). */
  timeout?: number;
  /** Retries for 408/429/5xx and connection errors, with exponential backoff (default 2). */
  maxRetries?: number;
  /** A fetch implementation (default: globalThis.fetch). */
  fetch?: Fetch;
  /** Headers sent with every request (null removes one). */
  defaultHeaders?: Record<string, string | null | undefined>;
  /** Query parameters sent with every request. */
  defaultQuery?: Record<string, string | undefined>;
}

type Method = FinalRequest["method"];
type CallOptions = RequestOptions & Omit<FinalRequest, "method" | "path">;

export class QloraClient implements ClientCore {
  readonly apiKey: string | null;
  readonly baseURL: string;
  readonly timeout: number;
  readonly maxRetries: number;
  readonly fetch: Fetch;
  readonly #options: ClientOptions;

  readonly chat: Chat;
  readonly completions: Completions;
  readonly responses: Responses;
  readonly models: Models;
  readonly adapters: Adapters;
  readonly files: Files;
  readonly fineTuning: FineTuning;
  /** vLLM's /tokenize, /detokenize and /version (beside /v1). */
  readonly tokenizer: Tokenizer;

  constructor(options: ClientOptions = {}) {
    this.#options = options;
    this.apiKey = options.apiKey !== undefined ? options.apiKey : readEnv("QLORA_API_KEY") ?? null;
    this.baseURL = (options.baseURL ?? readEnv("QLORA_BASE_URL") ?? DEFAULT_BASE_URL)
      .replace(/\/+$/, "");
    this.timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    this.maxRetries = options.maxRetries ?? DEFAULT_MAX_RETRIES;
    if (!Number.isInteger(this.maxRetries) || this.maxRetries < 0) {
      throw new Error("maxRetries must be a non-negative integer");
    }
    if (!options.fetch && typeof globalThis.fetch !== "function") {
      throw new Error("no fetch: pass `fetch` in the client options");
    }
    this.fetch = options.fetch ??
      ((input, init) => globalThis.fetch(input, init));
    this.chat = new Chat(this);
    this.completions = new Completions(this);
    this.responses = new Responses(this);
    this.models = new Models(this);
    this.adapters = new Adapters(this);
    this.files = new Files(this);
    this.fineTuning = new FineTuning(this);
    this.tokenizer = new Tokenizer(this);
  }

  /** A copy of this client with some options changed. */
  withOptions(options: ClientOptions): QloraClient {
    return new QloraClient({
      ...this.#options,
      apiKey: this.apiKey,
      baseURL: this.baseURL,
      timeout: this.timeout,
      maxRetries: this.maxRetries,
      fetch: this.#options.fetch,
      ...options,
    });
  }

  authHeaders(): Record<string, string> {
    return this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {};
  }

  defaultHeaders(): Record<string, string | null | undefined> {
    return {
      "x-qlora-sdk": `ts/${VERSION}`,
      ...(this.#options.defaultHeaders ?? {}),
    };
  }

  /** Sends a request; a streaming one resolves to a Stream, others to the parsed body. */
  request<T>(
    method: Method,
    path: string,
    options: CallOptions = {},
  ): APIPromise<T> {
    const opts = {
      ...options,
      method,
      path,
      query: {
        ...(this.#options.defaultQuery ?? {}),
        ...(options.query ?? {}),
      },
    };
    return new APIPromise<T>(
      makeRequest(this, opts),
      opts.stream
        ? (props) =>
          Promise.resolve(
            Stream.fromSSEResponse(
              props.response,
              props.controller,
              props.clearTimeout,
            ) as T,
          )
        : parseBody,
    );
  }

  get<T>(path: string, options?: CallOptions): APIPromise<T> {
    return this.request("get", path, options);
  }
  post<T>(path: string, options?: CallOptions): APIPromise<T> {
    return this.request("post", path, options);
  }
  delete<T>(path: string, options?: CallOptions): APIPromise<T> {
    return this.request("delete", path, options);
  }

  /** A list endpoint: a PagePromise (await it for one page, `for await` it for every item). */
  getAPIList<P extends AbstractPage<Item>, Item>(
    path: string,
    Page: new (
      fetcher: (q: Record<string, unknown>) => APIPromise<P>,
      query: Record<string, unknown>,
      body: { data: Item[] },
      response: Response,
    ) => P,
    query: Record<string, unknown> = {},
    options: RequestOptions = {},
  ): PagePromise<P, Item> {
    return requestPage<P, Item>(
      Page,
      (q, o) =>
        makeRequest(this, {
          ...o,
          method: "get",
          path,
          query: {
            ...(this.#options.defaultQuery ?? {}),
            ...q,
            ...(o?.query ?? {}),
          },
        }),
      query,
      options,
    );
  }
}
