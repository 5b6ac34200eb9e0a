// responses.ts — POST /v1/responses (OpenAI's Responses API), stateless. Which request fields are
// implemented, recorded or refused is decided in request_policy.ts (RESPONSES_POLICY); this file
// holds the implemented fields' schemas and the response, its items and its stream events.
import { z } from "@hono/zod-openapi";
import { requestSchema, RESPONSES_POLICY } from "./request_policy.ts";

type Ctx = z.RefinementCtx;

/** Parses `v` as one of `kinds` by its `type` (absent: `fallback`); another type is a 400
 * unsupported_value naming it (so the error names the item's type, not every union branch). */
function byType<T extends z.ZodType>(kinds: string[], fallback: string | null, what: string, union: T) {
  return z.preprocess((v: unknown, ctx: Ctx) => {
    if (!v || typeof v !== "object" || Array.isArray(v)) return v;
    const o = v as Record<string, unknown>;
    const t = o.type ?? fallback;
    if (typeof t !== "string" || !kinds.includes(t)) {
      ctx.addIssue({
        code: "custom",
        path: ["type"],
        message: `${what} type ${JSON.stringify(t ?? null)} is not supported (only ${kinds.map((k) => `"${k}"`).join(", ")})`,
        params: { code: "unsupported_value" },
        input: v,
      });
      return z.NEVER;
    }
    return o.type === undefined ? { ...o, type: t } : o;
  }, union);
}

const InputText = z.object({ type: z.literal("input_text"), text: z.string() }).strict();
const OutputTextPart = z.object({
  type: z.literal("output_text"),
  text: z.string(),
  annotations: z.array(z.unknown()).optional().openapi({ description: "Accepted and not used." }),
  logprobs: z.array(z.unknown()).optional().openapi({ description: "Accepted and not used." }),
}).strict();
const RefusalPart = z.object({ type: z.literal("refusal"), refusal: z.string() }).strict();

const MessageContent = z.union([
  z.string(),
  z.array(
    byType(
      ["input_text", "output_text", "refusal"],
      null,
      "content part",
      z.discriminatedUnion("type", [InputText, OutputTextPart, RefusalPart]),
    ),
  ),
]).openapi({
  description: "A string or text parts (input_text; output_text and refusal in assistant messages). Images, files and audio: 400.",
});

const ItemStatus = z.enum(["in_progress", "completed", "incomplete"]).optional().openapi({ description: "Accepted and not used." });

export const ResponseInputMessageSchema = z.object({
  type: z.literal("message"),
  role: z.enum(["user", "assistant", "system", "developer"]),
  content: MessageContent,
  id: z.string().optional().openapi({ description: "Accepted and not used." }),
  status: ItemStatus,
  phase: z.string().nullable().optional().openapi({ description: "Accepted and not used." }),
}).strict().openapi("ResponseInputMessage");

export const ResponseFunctionCallItemSchema = z.object({
  type: z.literal("function_call"),
  call_id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.string(),
  id: z.string().optional().openapi({ description: "Accepted and not used." }),
  status: ItemStatus,
}).strict().openapi("ResponseFunctionCallInput");

export const ResponseFunctionCallOutputItemSchema = z.object({
  type: z.literal("function_call_output"),
  call_id: z.string().min(1),
  output: z.union([z.string(), z.array(InputText)]),
  id: z.string().nullable().optional().openapi({ description: "Accepted and not used." }),
  status: ItemStatus.nullable(),
}).strict().openapi("ResponseFunctionCallOutputInput");

const InputItem = byType(
  ["message", "function_call", "function_call_output"],
  "message",
  "input item",
  z.discriminatedUnion("type", [ResponseInputMessageSchema, ResponseFunctionCallItemSchema, ResponseFunctionCallOutputItemSchema]),
);

export const ResponseFunctionToolSchema = z.object({
  type: z.literal("function"),
  name: z.string().min(1).max(64),
  description: z.string().nullable().optional(),
  parameters: z.record(z.string(), z.unknown()).nullable().optional(),
  strict: z.boolean().nullable().optional(),
}).strict().openapi("ResponseFunctionTool");

const ToolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), name: z.string().min(1) }).strict(),
]).openapi({ description: 'none, auto, required, or {"type": "function", "name": ...}.' });

export const ResponseTextFormatSchema = byType(
  ["text", "json_object", "json_schema"],
  null,
  "text.format",
  z.discriminatedUnion("type", [
    z.object({ type: z.literal("text") }).strict(),
    z.object({ type: z.literal("json_object") }).strict(),
    z.object({
      type: z.literal("json_schema"),
      name: z.string().min(1).max(64),
      schema: z.record(z.string(), z.unknown()),
      description: z.string().optional(),
      strict: z.boolean().nullable().optional(),
    }).strict(),
  ]),
);

const TextConfig = z.object({
  format: ResponseTextFormatSchema.optional(),
  verbosity: z.unknown().optional().openapi({ description: "Not supported (not a reasoning model): any non-null value is a 400." }),
}).strict().superRefine((t, ctx) => {
  if (t.verbosity !== undefined && t.verbosity !== null) {
    ctx.addIssue({
      code: "custom",
      path: ["verbosity"],
      message: "text.verbosity is not supported: not a reasoning model",
      params: { code: "unsupported_parameter" },
    });
  }
});

export const ResponseCreateRequestSchema = requestSchema(RESPONSES_POLICY, {
  model: z.string().min(1).openapi({ example: "tiny" }),
  input: z.union([z.string(), z.array(InputItem).min(1)]).openapi({ example: "Tell me a story." }),
  instructions: z.string().nullable().optional(),
  max_output_tokens: z.number().int().min(1).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  text: TextConfig.nullable().optional(),
  tools: z.array(
    byType(["function"], null, "tool", ResponseFunctionToolSchema),
  ).optional().openapi({ description: "Function tools only (built-in tools: 400)." }),
  tool_choice: ToolChoice.nullable().optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
}, "ResponseCreateRequest");

/** The request as the route reads it (the policy's own fields' types beside the implemented ones). */
export type ResponseCreateRequest = z.infer<typeof ResponseCreateRequestSchema> & {
  include?: string[] | null;
  metadata?: Record<string, string> | null;
  service_tier?: string | null;
  user?: string;
  safety_identifier?: string | null;
  prompt_cache_key?: string | null;
};
export type ResponseInputItem = Exclude<ResponseCreateRequest["input"], string>[number];

// ---- the response

const TopLogprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int()) });
const OutputTextLogprob = TopLogprob.extend({ top_logprobs: z.array(TopLogprob) });

export const ResponseOutputTextSchema = z.object({
  type: z.literal("output_text"),
  text: z.string(),
  annotations: z.array(z.unknown()).max(0).openapi({ description: "Always empty." }),
  logprobs: z.array(OutputTextLogprob).openapi({
    description: 'With include ["message.output_text.logprobs"] or top_logprobs; else empty.',
  }),
}).openapi("ResponseOutputText");

export const ResponseOutputMessageSchema = z.object({
  type: z.literal("message"),
  id: z.string(),
  status: z.enum(["in_progress", "completed", "incomplete"]),
  role: z.literal("assistant"),
  content: z.array(ResponseOutputTextSchema),
}).openapi("ResponseOutputMessage");

export const ResponseFunctionCallSchema = z.object({
  type: z.literal("function_call"),
  id: z.string(),
  call_id: z.string(),
  name: z.string(),
  arguments: z.string().openapi({ description: "The arguments, a JSON string." }),
  status: z.enum(["in_progress", "completed", "incomplete"]),
}).openapi("ResponseFunctionCall");

export const ResponseOutputItemSchema = z.discriminatedUnion("type", [ResponseOutputMessageSchema, ResponseFunctionCallSchema])
  .openapi("ResponseOutputItem");

export const ResponseUsageSchema = z.object({
  input_tokens: z.number().int(),
  input_tokens_details: z.object({
    cached_tokens: z.number().int().openapi({ description: "Prompt tokens found in the prefix cache." }),
    cache_write_tokens: z.number().int().openapi({ description: "Always 0: the prefix cache is automatic; nothing is a cache write." }),
  }),
  output_tokens: z.number().int(),
  output_tokens_details: z.object({ reasoning_tokens: z.number().int().openapi({ description: "Always 0." }) }),
  total_tokens: z.number().int(),
}).openapi("ResponseUsage");

export const ResponseSchema = z.object({
  id: z.string(),
  object: z.literal("response"),
  created_at: z.number().int(),
  completed_at: z.number().int().nullable(),
  status: z.enum(["completed", "incomplete", "in_progress", "failed"]),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  incomplete_details: z.object({ reason: z.literal("max_output_tokens") }).nullable(),
  instructions: z.string().nullable(),
  max_output_tokens: z.number().int().nullable(),
  model: z.string(),
  output: z.array(ResponseOutputItemSchema),
  parallel_tool_calls: z.boolean(),
  previous_response_id: z.null(),
  store: z.literal(false),
  background: z.literal(false),
  temperature: z.number().nullable(),
  top_p: z.number().nullable(),
  top_logprobs: z.number().int().nullable(),
  text: z.object({ format: z.record(z.string(), z.unknown()) }),
  tools: z.array(ResponseFunctionToolSchema),
  tool_choice: ToolChoice,
  truncation: z.literal("disabled"),
  metadata: z.record(z.string(), z.string()),
  service_tier: z.string().nullable(),
  usage: ResponseUsageSchema.optional().openapi({ description: "Absent until the response is done (stream events before the last)." }),
}).openapi("Response");

/** The stream: `event: <type>` and `data: <event>`, each with a sequence_number from 0. */
export const ResponseStreamEventSchema = z.object({
  type: z.enum([
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "error",
  ]),
  sequence_number: z.number().int(),
  response: ResponseSchema.optional(),
  output_index: z.number().int().optional(),
  content_index: z.number().int().optional(),
  item_id: z.string().optional(),
  item: ResponseOutputItemSchema.optional(),
  part: ResponseOutputTextSchema.optional(),
  delta: z.string().optional(),
  text: z.string().optional(),
  arguments: z.string().optional(),
  name: z.string().optional(),
  logprobs: z.array(
    z.object({ token: z.string(), logprob: z.number(), top_logprobs: z.array(z.object({ token: z.string(), logprob: z.number() })) }),
  )
    .optional(),
  code: z.string().nullable().optional(),
  message: z.string().optional(),
  param: z.string().nullable().optional(),
}).openapi("ResponseStreamEvent");

export type Response = z.infer<typeof ResponseSchema>;
