// errors.ts — the one translation of errors into OpenAI's shape
// {"error": {"message", "type", "param", "code"}}. Services throw ClientError (util/errors.ts);
// the app's onError, notFound, validation hook and the SSE streams all answer through here, so a
// given error reads the same wherever it surfaces.
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ClientError } from "../util/errors.ts";

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const TYPES: Record<number, string> = {
  403: "permission_error",
  429: "rate_limit_error",
  503: "server_error",
};

/** Any error as the status and body the client sees. Only ClientError (and Hono's own
 * HTTPException) says what went wrong; anything else is a server fault, shown as a bare 500. */
export function openAiError(err: unknown): { status: ContentfulStatusCode; body: ErrorBody } {
  let status: ContentfulStatusCode, message: string, code: string | null = null, param: string | null = null;
  if (err instanceof ClientError) {
    ({ status, message, code, param } = err);
  } else if (err instanceof HTTPException && err.status < 500) {
    status = err.status as ContentfulStatusCode;
    const malformed = status === 400 && /json/i.test(err.message);
    message = malformed ? "the request body is not valid JSON" : err.message || "bad request";
    code = malformed ? "invalid_json" : null;
  } else {
    return {
      status: 500,
      body: { error: { message: "internal server error", type: "server_error", param: null, code: "internal" } },
    };
  }
  return { status, body: { error: { message, type: TYPES[status] ?? "invalid_request_error", param, code } } };
}

/** Seconds a client told 429 waits before retrying, unless the error knows better (the queue
 * drains in about that time). */
export const RETRY_AFTER_SECONDS = 1;

export function errorResponse(c: Context, err: unknown): Response {
  const { status, body } = openAiError(err);
  if (status === 429) {
    const after = err instanceof ClientError && err.retryAfterSeconds !== null ? err.retryAfterSeconds : RETRY_AFTER_SECONDS;
    c.header("Retry-After", String(Math.max(1, Math.ceil(after))));
  }
  return c.json(body, status);
}

/** The issue path of a zod error ("messages.0.role"), for OpenAI's `param`. */
function issueParam(path: PropertyKey[]): string | null {
  return path.length ? path.map(String).join(".") : null;
}

interface Issue {
  code: string;
  path: PropertyKey[];
  message: string;
  errors?: Issue[][];
  keys?: string[];
  params?: { code?: string };
}

interface Specific {
  path: PropertyKey[];
  message: string;
  code: string;
}

/** The most specific form of a zod issue: inside a union, the branch issue that got furthest
 * (its path made absolute); an unknown key names the key itself. */
function specific(issue: Issue): Specific {
  if (issue.code === "invalid_union" && issue.errors?.length) {
    let best: Specific | null = null;
    for (const branch of issue.errors) {
      for (const sub of branch) {
        const s = specific(sub);
        const path = [...issue.path, ...s.path];
        if (!best || path.length > best.path.length) best = { ...s, path };
      }
    }
    if (best && best.path.length > issue.path.length) return best;
  }
  if (issue.code === "unrecognized_keys" && issue.keys?.length) {
    // OpenAI's own message (the parenthesis keeps the older wording for clients that matched it)
    const names = issue.keys.map((k) => issueParam([...issue.path, k]));
    return {
      path: [...issue.path, issue.keys[0]],
      message: `Unrecognized request argument supplied: ${names.join(", ")}`,
      code: "unknown_parameter",
    };
  }
  // request_policy.ts's refusals carry their code (unsupported_parameter, unsupported_value)
  return { path: issue.path, message: issue.message, code: issue.params?.code ?? "invalid_value" };
}

/** The app's only zod hook: a schema violation is a 400 whose `param` names the field at fault
 * (for an unknown field, the field itself, with OpenAI's message "Unrecognized request argument
 * supplied: <name>" and code unknown_parameter; for a field or value request_policy.ts refuses,
 * its code unsupported_parameter or unsupported_value and its message alone). */
// deno-lint-ignore no-explicit-any
export function validationHook(result: { success: boolean; error?: any }, c: Context): Response | undefined {
  if (result.success) return;
  const issues = ((result.error?.issues ?? []) as Issue[]).map(specific);
  const first = issues[0];
  const param = first ? issueParam(first.path) : null;
  // an unknown or unsupported field is told in OpenAI's words alone; other violations name their field
  const message = first && first.code !== "invalid_value"
    ? first.message
    : issues.slice(0, 5).map((i) => `${issueParam(i.path) ?? "body"}: ${i.message}`).join("; ");
  return errorResponse(c, new ClientError(400, message || "invalid request", first?.code ?? "invalid_value", param));
}
