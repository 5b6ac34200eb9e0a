// errors.ts — the one error type for mistakes a caller can fix (bad input, missing object,
// conflict, limit). Any layer may throw it; the HTTP edge maps it to OpenAI's error shape in one
// place (app.onError), so no layer below the edge knows about HTTP responses. Everything else
// that escapes is a server fault (500) and is logged, never shown.

/** HTTP statuses a ClientError may carry. */
export type ClientStatus = 400 | 401 | 403 | 404 | 409 | 413 | 415 | 422 | 429 | 503;

/** An error the caller caused and can fix; shown to the caller as is. */
export class ClientError extends Error {
  override name = "ClientError";
  constructor(
    readonly status: ClientStatus,
    message: string,
    /** OpenAI's machine-readable `code` (e.g. "invalid_value", "model_not_found"). */
    readonly code: string | null = null,
    /** The request field at fault, in OpenAI's dotted form (e.g. "messages[0].content"). */
    readonly param: string | null = null,
    /** For a 429: seconds until a retry can succeed, when known (else the edge's default). */
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(message);
  }
}
