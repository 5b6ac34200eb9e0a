// request_policy.ts — the one list of what this server does with each request field of OpenAI's
// POST /v1/chat/completions, POST /v1/completions and POST /v1/responses (OpenAI's full field lists,
// openai 7.55.0's ChatCompletionCreateParams / CompletionCreateParams / ResponseCreateParams, plus
// our extensions). No field is silently dropped: each one is
//
//   implemented  — it changes the response (its zod schema lives with the route's schema),
//   extension    — implemented, and not one of OpenAI's (vLLM's sampling extensions),
//   recorded     — it only describes the caller: accepted and written to the request's log line,
//   unsupported  — any non-null value is a 400 `unsupported_parameter` naming the field.
//
// A field may also refuse some of its values (`refuse`): a 400 `unsupported_value` naming the
// field (or the sub-field) at fault, e.g. store: true.
// Anything not listed is unknown: a 400 "Unrecognized request argument supplied: <name>".
//
// `requestSchema` builds a route's request schema from its table, so the schema (and so the
// OpenAPI document and the SDK), the errors and the tests (tests/api/request_policy_test.ts, one
// case per entry) all follow from these tables.
import { z } from "@hono/zod-openapi";

export type PolicyKind = "implemented" | "extension" | "recorded" | "unsupported";

/** A refused value: the dotted param at fault and why. */
export interface Refusal {
  param: string;
  message: string;
}

export interface FieldPolicy {
  kind: PolicyKind;
  /** Why (unsupported), or what it does (the others); shown in the OpenAPI document. */
  note: string;
  /** For recorded and unsupported fields: their schema (implemented fields' schemas live with the route). */
  schema?: z.ZodType;
  /** A value of this field (or of the whole body) this server does not support, or null. */
  refuse?: (value: unknown, body: Record<string, unknown>) => Refusal | null;
  /** For the tests: a value the field accepts, and (with `refuse`) one it refuses. */
  example?: unknown;
  refused?: unknown;
}

export type Policy = Record<string, FieldPolicy>;

const implemented = (note: string, more: Partial<FieldPolicy> = {}): FieldPolicy => ({ kind: "implemented", note, ...more });
const extension = (note: string): FieldPolicy => ({ kind: "extension", note });
const recorded = (schema: z.ZodType, example: unknown, more: Partial<FieldPolicy> = {}): FieldPolicy => ({
  kind: "recorded",
  note: "Describes the caller: accepted and recorded in the request log.",
  schema,
  example,
  ...more,
});
const unsupported = (reason: string, example: unknown): FieldPolicy => ({
  kind: "unsupported",
  note: `Not supported (${reason}): any non-null value is a 400 unsupported_parameter.`,
  schema: z.unknown(),
  example,
});

const given = (v: unknown) => v !== null && v !== undefined;

/** OpenAI's Metadata: up to 16 string pairs. */
const MetadataSchema = z.record(z.string().max(64), z.string().max(512)).nullable().refine(
  (m) => !m || Object.keys(m).length <= 16,
  "at most 16 keys",
);

/** Fields both endpoints share. */
const COMMON: Policy = {
  model: implemented("The base model's id or an adapter id."),
  frequency_penalty: implemented("OpenAI's frequency penalty over the output tokens."),
  presence_penalty: implemented("OpenAI's presence penalty over the output tokens."),
  logit_bias: implemented("Token id → bias added to its logit before sampling."),
  max_tokens: implemented("Tokens to generate at most."),
  n: implemented("Choices per prompt."),
  seed: implemented("Seeds sampling (choice i uses seed + i): same seed, same output."),
  stop: implemented("Up to 16 stop sequences."),
  stream: implemented("Server-sent events."),
  stream_options: implemented("include_usage: a last chunk with the usage.", {
    refuse: (v) =>
      (v as { include_obfuscation?: unknown } | null)?.include_obfuscation === true
        ? { param: "stream_options.include_obfuscation", message: "stream obfuscation is not supported" }
        : null,
    refused: { include_obfuscation: true },
  }),
  temperature: implemented("Sampling temperature (0: greedy)."),
  top_p: implemented("Nucleus sampling."),
  user: recorded(z.string().max(256), "user-1234"),
  // vLLM's extensions
  top_k: extension("Keep the k most likely tokens (≤ 0: off)."),
  min_p: extension("Drop tokens below min_p × the top probability."),
  repetition_penalty: extension("Hugging Face's repetition penalty (1: off)."),
  ignore_eos: extension("Keep generating past end-of-sequence tokens."),
  min_tokens: extension("Generate at least this many tokens."),
  stop_token_ids: extension("Extra token ids that end generation."),
  structured_outputs: extension("vLLM's structured outputs: json (a schema), regex, choice, grammar (EBNF) or json_object."),
  prompt_logprobs: {
    kind: "extension",
    note: "vLLM's prompt_logprobs (0-20): per prompt token (the first null), {token id: {logprob, rank, decoded_token}} for the token " +
      "and the n most likely at its position. Not with stream.",
    refuse: (v, body) =>
      given(v) && body.stream === true ? { param: "prompt_logprobs", message: "prompt_logprobs is not supported with stream" } : null,
    example: 1,
    refused: 1,
  },
};

export const CHAT_POLICY: Policy = {
  ...COMMON,
  messages: implemented("The conversation, rendered with the model's chat template."),
  max_completion_tokens: implemented("Tokens to generate at most (max_tokens' successor)."),
  logprobs: implemented("Logprobs of the generated tokens."),
  top_logprobs: implemented("The most likely alternatives per token (0-20), with logprobs: true."),
  response_format: implemented(
    "text, json_object or json_schema: the output is grammar-constrained (xgrammar) to any JSON object or to the schema; a schema keyword the grammar cannot enforce is a 400 naming it.",
  ),
  modalities: implemented('Only ["text"].', {
    schema: z.array(z.string()).nullable(),
    refuse: (v) =>
      Array.isArray(v) && v.some((m) => m !== "text") ? { param: "modalities", message: 'only the "text" modality is supported' } : null,
    example: ["text"],
    refused: ["text", "audio"],
  }),
  metadata: recorded(MetadataSchema, { app: "demo" }),
  safety_identifier: recorded(z.string().max(256).nullable(), "hashed-user-1"),
  prompt_cache_key: recorded(z.string().max(1024).nullable(), "conversation-42"),
  store: recorded(z.boolean().nullable(), false, {
    refuse: (v) => v === true ? { param: "store", message: "stored completions are not supported (store must be false)" } : null,
    refused: true,
  }),
  service_tier: recorded(z.string().nullable(), "auto", {
    refuse: (v) =>
      given(v) && v !== "auto" && v !== "default"
        ? { param: "service_tier", message: `service_tier "${v}" is not supported (only "auto" or "default")` }
        : null,
    refused: "priority",
  }),
  tools: implemented("Function tools: passed to the chat template; the output is parsed into message.tool_calls."),
  tool_choice: implemented("none, auto, required or a named function (required and named: the call is grammar-constrained)."),
  parallel_tool_calls: implemented("false: at most one tool call per choice."),
  functions: unsupported("the deprecated functions: use tools", [{ name: "f" }]),
  function_call: unsupported("the deprecated function_call: use tool_choice", "auto"),
  audio: unsupported("no audio output", { voice: "alloy", format: "wav" }),
  prediction: unsupported("no predicted outputs", { type: "content", content: "x" }),
  web_search_options: unsupported("no web search", {}),
  reasoning_effort: unsupported("not a reasoning model", "low"),
  verbosity: unsupported("not a reasoning model", "low"),
  moderation: unsupported("no moderation", { model: "omni-moderation-latest" }),
  prompt_cache_retention: unsupported("the prefix cache has no retention settings", "24h"),
  prompt_cache_options: unsupported("the prefix cache has no options", {}),
};

export const COMPLETIONS_POLICY: Policy = {
  ...COMMON,
  prompt: implemented("A string, strings, token ids, or lists of token ids."),
  logprobs: implemented("Logprobs of the generated tokens and the top alternatives (0-20)."),
  echo: implemented("Prepend the prompt to the text; with logprobs, the prompt tokens' logprobs come first (the first one null)."),
  best_of: implemented("Only equal to n (no server-side ranking).", {
    refuse: (v, body) =>
      given(v) && v !== (body.n ?? 1) ? { param: "best_of", message: "best_of must equal n (no server-side ranking)" } : null,
    example: 1,
    refused: 2,
  }),
  suffix: unsupported("no insertion (fill-in-the-middle)", "the end"),
};

/** POST /v1/responses (openai 7.55.0's ResponseCreateParams). The route translates the request into
 * chat's fields and runs chat (routes/responses.ts), so the fields it passes on (text.format →
 * response_format, tools, tool_choice, parallel_tool_calls) are implemented exactly as far as chat
 * implements them: what chat refuses, this route refuses too, naming the Responses field. */
export const RESPONSES_POLICY: Policy = {
  model: implemented("The base model's id or an adapter id (the adapter applies to this request only)."),
  input: implemented(
    "A string (one user message) or items: messages (input_text / output_text parts), function_call and function_call_output items.",
  ),
  instructions: implemented("A system message put before the input."),
  max_output_tokens: implemented("Tokens to generate at most (chat's max_completion_tokens)."),
  temperature: implemented("Sampling temperature (0: greedy)."),
  top_p: implemented("Nucleus sampling."),
  top_logprobs: implemented("The most likely alternatives per output token (0-20); turns on the output's logprobs."),
  include: implemented('Only "message.output_text.logprobs" (the output text\'s logprobs).', {
    schema: z.array(z.string()).nullable(),
    refuse: (v) => {
      const bad = Array.isArray(v) ? v.find((x) => x !== "message.output_text.logprobs") : undefined;
      return bad !== undefined
        ? { param: "include", message: `include "${bad}" is not supported (only "message.output_text.logprobs")` }
        : null;
    },
    example: ["message.output_text.logprobs"],
    refused: ["reasoning.encrypted_content"],
  }),
  stream: implemented("Server-sent events of the Responses stream event types."),
  stream_options: implemented("Only include_obfuscation: false (no obfuscation field is sent).", {
    schema: z.object({ include_obfuscation: z.boolean().nullable().optional() }).strict().nullable(),
    refuse: (v) =>
      (v as { include_obfuscation?: unknown } | null)?.include_obfuscation === true
        ? { param: "stream_options.include_obfuscation", message: "stream obfuscation is not supported" }
        : null,
    example: { include_obfuscation: false },
    refused: { include_obfuscation: true },
  }),
  text: implemented("format: text, json_schema or json_object (chat's response_format); verbosity: not supported."),
  tools: implemented("Function tools (chat's tools)."),
  tool_choice: implemented("none, auto, required or a function (chat's tool_choice)."),
  parallel_tool_calls: implemented("Chat's parallel_tool_calls."),
  truncation: implemented('Only "disabled" (the default): an input beyond the context is a 400.', {
    schema: z.string().nullable(),
    refuse: (v) =>
      given(v) && v !== "disabled" ? { param: "truncation", message: `truncation "${v}" is not supported (only "disabled")` } : null,
    example: "disabled",
    refused: "auto",
  }),
  background: implemented("Only false: the response is made while the request waits.", {
    schema: z.boolean().nullable(),
    refuse: (v) =>
      v === true ? { param: "background", message: "background responses are not supported (this server keeps no responses)" } : null,
    example: false,
    refused: true,
  }),
  store: recorded(z.boolean().nullable(), false, {
    note: "Only false: this server keeps no responses, so nothing can be retrieved or continued later (true: 400).",
    refuse: (v) =>
      v === true
        ? {
          param: "store",
          message: "stored responses are not supported: this server is stateless (send store: false and the whole conversation as input)",
        }
        : null,
    refused: true,
  }),
  metadata: recorded(MetadataSchema, { app: "demo" }),
  user: recorded(z.string().max(256), "user-1234"),
  safety_identifier: recorded(z.string().max(256).nullable(), "hashed-user-1"),
  prompt_cache_key: recorded(z.string().max(1024).nullable(), "conversation-42"),
  service_tier: recorded(z.string().nullable(), "auto", {
    refuse: (v) =>
      given(v) && v !== "auto" && v !== "default"
        ? { param: "service_tier", message: `service_tier "${v}" is not supported (only "auto" or "default")` }
        : null,
    refused: "priority",
  }),
  previous_response_id: unsupported("this server keeps no responses: send the whole conversation as input", "resp_123"),
  conversation: unsupported("this server keeps no conversations: send the whole conversation as input", "conv_123"),
  context_management: unsupported("no server-side compaction", [{ type: "compaction" }]),
  max_tool_calls: unsupported("no built-in tools to limit", 1),
  reasoning: unsupported("not a reasoning model", { effort: "low" }),
  prompt: unsupported("no stored prompt templates", { id: "pmpt_123" }),
  moderation: unsupported("no moderation", { model: "omni-moderation-latest" }),
  prompt_cache_retention: unsupported("the prefix cache has no retention settings", "24h"),
  prompt_cache_options: unsupported("the prefix cache has no options", {}),
  access_programs: unsupported("no programmatic tool calling", {}),
  image: unsupported("no image output", {}),
};

/** The kinds' counts of a policy (for the README and the report). */
export function policyCounts(p: Policy): Record<PolicyKind, number> {
  const out: Record<PolicyKind, number> = { implemented: 0, extension: 0, recorded: 0, unsupported: 0 };
  for (const f of Object.values(p)) out[f.kind]++;
  return out;
}

/** The issues of a body's unsupported fields and refused values (the validation hook turns their
 * `params` into OpenAI's `code` and `param`). */
export function policyIssues(policy: Policy, body: Record<string, unknown>): { code: string; param: string; message: string }[] {
  const out: { code: string; param: string; message: string }[] = [];
  for (const [field, p] of Object.entries(policy)) {
    const v = body[field];
    if (p.kind === "unsupported") {
      if (given(v)) out.push({ code: "unsupported_parameter", param: field, message: `${field} is not supported: ${p.note}` });
      continue;
    }
    if (v === undefined || !p.refuse) continue;
    const r = p.refuse(v, body);
    if (r) out.push({ code: "unsupported_value", ...r });
  }
  return out;
}

/** A route's request schema: its implemented fields' schemas (exactly the policy's implemented
 * and extension fields: a mismatch throws when the module loads), the recorded and unsupported
 * fields, strict (unknown fields are 400s), and the policy's checks. */
export function requestSchema<S extends z.ZodRawShape>(policy: Policy, shape: S, name: string) {
  return policySchema(policy, shape, name).openapi(name);
}

/** requestSchema without a component name (for nested objects such as chat messages). */
export function policySchema<S extends z.ZodRawShape>(policy: Policy, shape: S, name: string) {
  const want = Object.entries(policy).filter(([, p]) => p.kind === "implemented" || p.kind === "extension").map(([k]) => k);
  const missing = want.filter((k) => !(k in shape) && !policy[k].schema);
  const extra = Object.keys(shape).filter((k) => !(k in policy));
  if (missing.length || extra.length) {
    throw new Error(`${name}: request schema and policy differ (no schema: ${missing.join(", ")}; not in the policy: ${extra.join(", ")})`);
  }
  const full: Record<string, z.ZodType> = {};
  // the route's own fields first, in its order (model, messages, …), then the policy's others
  const order = [...Object.keys(shape), ...Object.keys(policy).filter((k) => !(k in shape))];
  for (const k of order) {
    const p = policy[k];
    let s = (shape as unknown as Record<string, z.ZodType>)[k] ?? p.schema!.optional();
    if (!(k in shape) || p.kind === "unsupported" || p.kind === "recorded") s = s.openapi({ description: p.note });
    full[k] = s;
  }
  return z.object(full as unknown as S).strict().superRefine((body, ctx) => {
    for (const i of policyIssues(policy, body as Record<string, unknown>)) {
      ctx.addIssue({ code: "custom", message: i.message, path: i.param.split("."), params: { code: i.code } });
    }
  });
}

/** The recorded (caller-describing) fields of a body, for the request log line. */
export function recordedFields(policy: Policy, body: Record<string, unknown>): Record<string, unknown> | null {
  let out: Record<string, unknown> | null = null;
  for (const [k, p] of Object.entries(policy)) {
    if (p.kind === "recorded" && given(body[k])) (out ??= {})[k] = body[k];
  }
  return out;
}
