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

export function errorResponse(c: Context, err: unknown): Response {
  const { status, body } = openAiError(err);
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
}

/** The most specific form of a zod issue: inside a union, the branch issue that got furthest
 * (its path made absolute); an unknown key names the key itself. */
function specific(issue: Issue): { path: PropertyKey[]; message: string } {
  if (issue.code === "invalid_union" && issue.errors?.length) {
    let best: { path: PropertyKey[]; message: string } | null = null;
    for (const branch of issue.errors) {
      for (const sub of branch) {
        const s = specific(sub);
        const path = [...issue.path, ...s.path];
        if (!best || path.length > best.path.length) best = { path, message: s.message };
      }
    }
    if (best && best.path.length > issue.path.length) return best;
  }
  if (issue.code === "unrecognized_keys" && issue.keys?.length) {
    return {
      path: [...issue.path, issue.keys[0]],
      message: `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}`,
    };
  }
  return { path: issue.path, message: issue.message };
}

/** The app's only zod hook: a schema violation is a 400 whose `param` names the field at fault
 * (for an unknown field, the field itself). */
// deno-lint-ignore no-explicit-any
export function validationHook(result: { success: boolean; error?: any }, c: Context): Response | undefined {
  if (result.success) return;
  const issues = ((result.error?.issues ?? []) as Issue[]).map(specific);
  const param = issues[0] ? issueParam(issues[0].path) : null;
  const message = issues.slice(0, 5).map((i) => `${issueParam(i.path) ?? "body"}: ${i.message}`).join("; ");
  return errorResponse(c, new ClientError(400, message || "invalid request", "invalid_value", param));
}
