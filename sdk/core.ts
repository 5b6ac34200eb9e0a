// core.ts — the HTTP machinery under every resource: URL and header building, timeouts, the
// caller's AbortSignal, retries with exponential backoff and jitter (429, 408, ≥ 500 and
// connection errors; retry-after-ms / retry-after honoured), status → typed error, and APIPromise
// (a promise of the parsed body that can also hand back the raw Response and the request id).
// Only fetch, AbortController, Headers, URL, FormData and timers: it runs in Deno, Node 20+ and
// browsers.
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from "./errors.ts";

export type Fetch = (
  input: string | URL | Request,
  init?: RequestInit,
) => Promise<Response>;
export type HTTPMethod = "get" | "post" | "put" | "patch" | "delete";
type HeaderValue = string | null | undefined;

/** Options every method takes as its last argument. */
export interface RequestOptions {
  /** Cancels the request (and a stream's body); the call rejects with APIUserAbortError. */
  signal?: AbortSignal | null;
  /** Milliseconds to wait for a response (per attempt); default: the client's timeout. */
  timeout?: number;
  /** Retries for 429/5xx/connection errors; default: the client's maxRetries. */
  maxRetries?: number;
  /** Extra headers (a null value removes a default header). */
  headers?: Record<string, HeaderValue>;
  /** Extra query parameters. */
  query?: Record<string, unknown>;
  /** Sent as x-request-id; the server then logs the request under it (1-128 of [A-Za-z0-9._:-]). */
  requestId?: string;
}

export interface FinalRequest {
  method: HTTPMethod;
  path: string;
  query?: Record<string, unknown> | null;
  body?: unknown;
  /** Parse the response as an SSE stream (the body is left unread). */
  stream?: boolean;
  /** The response body is text, not JSON. */
  text?: boolean;
  /** The response body is handed back as the Response itself. */
  raw?: boolean;
}

export interface ClientCore {
  readonly baseURL: string;
  readonly maxRetries: number;
  readonly timeout: number;
  readonly fetch: Fetch;
  authHeaders(): Record<string, string>;
  defaultHeaders(): Record<string, HeaderValue>;
}

export interface APIResponseProps {
  response: Response;
  options: FinalRequest & RequestOptions;
  /** The controller behind this request: aborting it cancels a stream body too. */
  controller: AbortController;
  /** Ends the per-attempt timeout (called once the body is read, or when a stream starts). */
  clearTimeout: () => void;
}

const sleep = (ms: number, signal?: AbortSignal | null) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(new APIUserAbortError());
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new APIUserAbortError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

export function buildURL(
  baseURL: string,
  path: string,
  query?: Record<string, unknown> | null,
): string {
  const url = new URL(
    baseURL.replace(/\/+$/, "") + (path.startsWith("/") ? path : `/${path}`),
  );
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) {
      for (const x of v) url.searchParams.append(k, String(x));
    } else url.searchParams.set(k, String(v));
  }
  return url.toString();
}

/** Encodes one path segment (ids may contain ':' as in ft:base:suffix:job). */
export const seg = (s: string) => encodeURIComponent(s);

const isFormBody = (b: unknown): b is FormData => typeof FormData !== "undefined" && b instanceof FormData;

/** Milliseconds the server asks us to wait (retry-after-ms, retry-after in seconds or as a date), or null. */
export function retryAfterMs(headers: Headers | undefined): number | null {
  const ms = Number(headers?.get("retry-after-ms") ?? NaN);
  if (Number.isFinite(ms) && ms >= 0) return ms;
  const ra = headers?.get("retry-after");
  if (!ra) return null;
  const s = Number(ra);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const d = Date.parse(ra);
  return Number.isNaN(d) ? null : Math.max(0, d - Date.now());
}

/** Exponential backoff with jitter: 0.5 s · 2^n, at most 8 s, minus up to 25 % at random. */
export function backoffMs(retriesDone: number, headers?: Headers): number {
  const asked = retryAfterMs(headers);
  if (asked !== null && asked <= 60_000) return asked;
  const base = Math.min(0.5 * 2 ** retriesDone, 8);
  return base * (1 - Math.random() * 0.25) * 1000;
}

function shouldRetry(res: Response): boolean {
  const explicit = res.headers.get("x-should-retry");
  if (explicit === "true") return true;
  if (explicit === "false") return false;
  // (openai-node also retries 409; here a 409 means a taken id, which waiting does not change)
  return res.status === 408 || res.status === 429 || res.status >= 500;
}

async function errorFromResponse(res: Response): Promise<APIError> {
  const text = await res.text().catch(() => "");
  let body: unknown = text || undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch { /* not JSON: keep the text */ }
  return APIError.generate(
    res.status,
    body,
    text && typeof body === "string" ? text : undefined,
    res.headers,
  );
}

/** Performs one logical request (with its retries) and returns the successful Response. */
export async function makeRequest(
  client: ClientCore,
  opts: FinalRequest & RequestOptions,
): Promise<APIResponseProps> {
  const maxRetries = opts.maxRetries ?? client.maxRetries;
  const timeout = opts.timeout ?? client.timeout;
  const url = buildURL(client.baseURL, opts.path, { ...(opts.query ?? {}) });
  for (let attempt = 0;; attempt++) {
    if (opts.signal?.aborted) throw new APIUserAbortError();
    const headers = new Headers();
    const set = (h: Record<string, HeaderValue>) => {
      for (const [k, v] of Object.entries(h)) {
        v === null ? headers.delete(k) : v !== undefined && headers.set(k, v);
      }
    };
    set({ accept: opts.stream ? "text/event-stream" : "application/json" });
    set(client.authHeaders());
    set(client.defaultHeaders());
    if (opts.requestId) headers.set("x-request-id", opts.requestId);
    if (attempt > 0) headers.set("x-retry-count", String(attempt));
    let body: BodyInit | undefined;
    if (opts.body !== undefined) {
      if (isFormBody(opts.body)) body = opts.body; // fetch sets the multipart boundary
      else {
        headers.set("content-type", "application/json");
        body = JSON.stringify(opts.body);
      }
    }
    set(opts.headers ?? {});

    const controller = new AbortController();
    let timedOut = false;
    const onUserAbort = () => controller.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onUserAbort, { once: true });
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeout);
    const clear = () => {
      clearTimeout(timer);
    };
    const release = () => {
      clear();
      opts.signal?.removeEventListener("abort", onUserAbort);
    };

    let res: Response;
    try {
      res = await client.fetch(url, {
        method: opts.method.toUpperCase(),
        headers,
        body,
        signal: controller.signal,
      });
    } catch (e) {
      release();
      if (opts.signal?.aborted) throw new APIUserAbortError();
      const err = timedOut ? new APIConnectionTimeoutError() : new APIConnectionError({ cause: e });
      if (attempt < maxRetries) {
        await sleep(backoffMs(attempt), opts.signal);
        continue;
      }
      throw err;
    }
    if (!res.ok) {
      const retry = attempt < maxRetries && shouldRetry(res);
      const err = await errorFromResponse(res).finally(release);
      if (retry) {
        await sleep(backoffMs(attempt, res.headers), opts.signal);
        continue;
      }
      throw err;
    }
    // A stream's timeout covers the wait for the response; its body streams for as long as it takes
    // (the caller's signal still aborts it until release() runs at the stream's end).
    if (opts.stream) clear();
    return { response: res, options: opts, controller, clearTimeout: release };
  }
}

/** Reads a successful response's body (JSON unless told otherwise), turning an abort or timeout while reading into the right error. */
export async function parseBody<T>(props: APIResponseProps): Promise<T> {
  const { response, options } = props;
  try {
    if (options.raw) return response as unknown as T;
    if (response.status === 204) return undefined as T;
    if (options.text) return (await response.text()) as T;
    const ct = response.headers.get("content-type") ?? "";
    const text = await response.text();
    if (!ct.includes("json")) return text as T;
    const data = JSON.parse(text);
    const requestId = response.headers.get("x-request-id");
    if (data && typeof data === "object" && requestId) {
      Object.defineProperty(data, "_request_id", {
        value: requestId,
        enumerable: false,
      });
    }
    return data as T;
  } catch (e) {
    if (options.signal?.aborted) throw new APIUserAbortError();
    if (props.controller.signal.aborted) throw new APIConnectionTimeoutError();
    throw e;
  } finally {
    props.clearTimeout();
  }
}

/**
 * A promise of the parsed body. `await client.models.list()` gives the data; `.withResponse()`
 * gives `{data, response, requestId}`; `.asResponse()` gives the raw Response.
 */
export class APIPromise<T> extends Promise<T> {
  #parsed: Promise<T> | undefined;

  constructor(
    private readonly responsePromise: Promise<APIResponseProps>,
    private readonly parse: (props: APIResponseProps) => Promise<T> = parseBody,
  ) {
    // The executor is a no-op: `then` is overridden to go through the (lazy) parse.
    super((resolve) => resolve(null as T));
    // The request starts at once; a failure is reported to whoever awaits the call, however much
    // later that is, and is not an unhandled rejection in the meantime.
    responsePromise.catch(() => {});
  }

  // Derived promises (`.then()` results) are plain Promises.
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  /** Maps the parsed body (used by resources that wrap results). */
  _thenUnwrap<U>(
    fn: (data: T, props: APIResponseProps) => U | Promise<U>,
  ): APIPromise<U> {
    return new APIPromise(
      this.responsePromise,
      async (props) => fn(await this.parse(props), props),
    );
  }

  /** The raw Response (its body unread). */
  asResponse(): Promise<Response> {
    return this.responsePromise.then((p) => {
      p.clearTimeout();
      return p.response;
    });
  }

  /** The parsed body together with the Response and its request id. */
  async withResponse(): Promise<
    { data: T; response: Response; requestId: string | null }
  > {
    const [data, props] = await Promise.all([
      this.#parse(),
      this.responsePromise,
    ]);
    return {
      data,
      response: props.response,
      requestId: props.response.headers.get("x-request-id"),
    };
  }

  #parse(): Promise<T> {
    if (!this.#parsed) this.#parsed = this.responsePromise.then(this.parse);
    return this.#parsed;
  }

  override then<R1 = T, R2 = never>(
    onfulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.#parse().then(onfulfilled, onrejected);
  }

  override catch<R = never>(
    onrejected?: ((reason: unknown) => R | PromiseLike<R>) | null,
  ): Promise<T | R> {
    return this.#parse().catch(onrejected);
  }

  override finally(onfinally?: (() => void) | null): Promise<T> {
    return this.#parse().finally(onfinally);
  }
}

/** Reads an environment variable where one exists (Deno with permission, Node), else undefined. Never prompts. */
export function readEnv(name: string): string | undefined {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  try {
    if (g.Deno?.permissions?.querySync) {
      if (
        g.Deno.permissions.querySync({ name: "env", variable: name }).state !==
          "granted"
      ) return undefined;
      return g.Deno.env.get(name) ?? undefined;
    }
    return g.process?.env?.[name] ?? undefined;
  } catch {
    return undefined;
  }
}
