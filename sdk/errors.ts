// errors.ts — every error the client throws. HTTP errors are APIError subclasses chosen by status;
// each carries the status, the server's error body ({"error": {message, type, param, code}}), the
// response headers and the request id (x-request-id) to quote in bug reports.

/** The server's error body, in OpenAI's shape. */
export interface ErrorObject {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

export class QloraError extends Error {
  override name = "QloraError";
}

export class APIError extends QloraError {
  override name = "APIError";
  /** HTTP status, or undefined for errors without a response (connection, timeout, abort). */
  readonly status: number | undefined;
  /** The parsed response body ({"error": {...}}), or the text when it was not JSON. */
  readonly body: unknown;
  /** `body.error`, when the body has OpenAI's shape. */
  readonly error: ErrorObject | undefined;
  readonly headers: Headers | undefined;
  /** The x-request-id response header (the server logs every request under it). */
  readonly requestId: string | null;
  readonly code: string | null;
  readonly param: string | null;
  readonly type: string | null;

  constructor(
    status: number | undefined,
    body: unknown,
    message: string | undefined,
    headers: Headers | undefined,
  ) {
    const error = errorObjectOf(body);
    super(APIError.makeMessage(status, error, message));
    this.status = status;
    this.body = body;
    this.error = error;
    this.headers = headers;
    this.requestId = headers?.get("x-request-id") ?? null;
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
    this.type = error?.type ?? null;
  }

  private static makeMessage(
    status: number | undefined,
    error: ErrorObject | undefined,
    message: string | undefined,
  ): string {
    const msg = error?.message ?? message ?? "";
    if (status && msg) return `${status} ${msg}`;
    if (status) return `${status} status code (no body)`;
    return msg || "(no status code or body)";
  }

  /** The subclass for a status (BadRequestError for 400, …, InternalServerError for ≥ 500). */
  static generate(
    status: number,
    body: unknown,
    message: string | undefined,
    headers: Headers,
  ): APIError {
    const Cls = status === 400
      ? BadRequestError
      : status === 401
      ? AuthenticationError
      : status === 403
      ? PermissionDeniedError
      : status === 404
      ? NotFoundError
      : status === 409
      ? ConflictError
      : status === 413
      ? PayloadTooLargeError
      : status === 422
      ? UnprocessableEntityError
      : status === 429
      ? RateLimitError
      : status >= 500
      ? InternalServerError
      : APIError;
    return new Cls(status, body, message, headers);
  }
}

function errorObjectOf(body: unknown): ErrorObject | undefined {
  const e = (body as { error?: unknown } | null)?.error;
  if (
    !e || typeof e !== "object" ||
    typeof (e as ErrorObject).message !== "string"
  ) return undefined;
  const o = e as Partial<ErrorObject>;
  return {
    message: o.message!,
    type: o.type ?? "",
    param: o.param ?? null,
    code: o.code ?? null,
  };
}

export class BadRequestError extends APIError {
  override name = "BadRequestError";
  declare readonly status: 400;
}
export class AuthenticationError extends APIError {
  override name = "AuthenticationError";
  declare readonly status: 401;
}
export class PermissionDeniedError extends APIError {
  override name = "PermissionDeniedError";
  declare readonly status: 403;
}
export class NotFoundError extends APIError {
  override name = "NotFoundError";
  declare readonly status: 404;
}
export class ConflictError extends APIError {
  override name = "ConflictError";
  declare readonly status: 409;
}
export class PayloadTooLargeError extends APIError {
  override name = "PayloadTooLargeError";
  declare readonly status: 413;
}
export class UnprocessableEntityError extends APIError {
  override name = "UnprocessableEntityError";
  declare readonly status: 422;
}
export class RateLimitError extends APIError {
  override name = "RateLimitError";
  declare readonly status: 429;
}
export class InternalServerError extends APIError {
  override name = "InternalServerError";
}

/** The request never got a response (DNS, refused, reset, …); `cause` is what fetch threw. */
export class APIConnectionError extends APIError {
  override name = "APIConnectionError";
  declare readonly status: undefined;
  constructor({ message, cause }: { message?: string; cause?: unknown } = {}) {
    super(undefined, undefined, message ?? "Connection error.", undefined);
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

/** No response within the request's timeout. */
export class APIConnectionTimeoutError extends APIConnectionError {
  override name = "APIConnectionTimeoutError";
  constructor({ message }: { message?: string } = {}) {
    super({ message: message ?? "Request timed out." });
  }
}

/** The caller's AbortSignal fired (or a stream's abort() was called). */
export class APIUserAbortError extends APIError {
  override name = "APIUserAbortError";
  declare readonly status: undefined;
  constructor({ message }: { message?: string } = {}) {
    super(undefined, undefined, message ?? "Request was aborted.", undefined);
  }
}
