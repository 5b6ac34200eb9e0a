// chat.ts — POST /v1/chat/completions. Which request fields are implemented, recorded or refused
// is decided in request_policy.ts (CHAT_POLICY); this file holds the implemented fields' schemas.
import { z } from "@hono/zod-openapi";
import { MaxTokensSchema, PromptLogprobsSchema, samplingFields, SystemFingerprintSchema, UsageSchema } from "./common.ts";
import { CHAT_POLICY, type Policy, policySchema, requestSchema } from "./request_policy.ts";

/** A content part: only text parts are supported (images, audio, files: 400 unsupported_value). */
const ContentPart = z.object({ type: z.string(), text: z.string().optional() }).loose().superRefine((p, ctx) => {
  if (p.type !== "text") {
    ctx.addIssue({
      code: "custom",
      path: ["type"],
      message: `content part type "${p.type}" is not supported (only "text")`,
      params: { code: "unsupported_value" },
    });
    return;
  }
  if (typeof p.text !== "string") ctx.addIssue({ code: "custom", path: ["text"], message: "a text part needs a string text" });
  const unknown = Object.keys(p).filter((k) => k !== "type" && k !== "text");
  if (unknown.length) ctx.addIssue({ code: "unrecognized_keys", keys: unknown, input: p, message: "unknown field" });
}).openapi({ description: 'Only {"type": "text", "text": ...} parts are supported.' });

/** The fields of a message, decided as the request's are. */
export const MESSAGE_POLICY: Policy = {
  role: { kind: "implemented", note: "system, developer, user, assistant or tool." },
  content: { kind: "implemented", note: "A string or text parts." },
  name: { kind: "implemented", note: "Passed to the chat template." },
  tool_call_id: { kind: "implemented", note: "Passed to the chat template (tool messages)." },
  tool_calls: { kind: "implemented", note: "An assistant's earlier tool calls, passed to the chat template." },
  function_call: {
    kind: "unsupported",
    note: "Not supported (the deprecated function_call: use tool_calls).",
    schema: z.unknown(),
    example: {},
  },
  audio: { kind: "unsupported", note: "Not supported (no audio).", schema: z.unknown(), example: { id: "a" } },
  refusal: { kind: "unsupported", note: "Not supported (no refusals).", schema: z.unknown(), example: "no" },
};

/** A function call the model made (a response's message.tool_calls, or an assistant message's in
 * the history). `arguments` is JSON text, as the model wrote it. */
export const ToolCallSchema = z.object({
  id: z.string(),
  type: z.literal("function"),
  function: z.object({ name: z.string(), arguments: z.string() }),
}).openapi("ToolCall");

export const ChatMessageSchema = policySchema(MESSAGE_POLICY, {
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(ContentPart)]).nullable().optional(),
  name: z.string().optional(),
  tool_call_id: z.string().optional(),
  tool_calls: z.array(ToolCallSchema).nullable().optional(),
}, "ChatMessage").openapi("ChatMessage");

/** A JSON schema (checked against what the grammar enforces when the request is made). */
const JsonSchemaObject = z.record(z.string(), z.unknown()).openapi({ description: "A JSON schema." });

export const ResponseFormatSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }).strict(),
  z.object({ type: z.literal("json_object") }).strict(),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: z.string(),
      description: z.string().optional(),
      schema: JsonSchemaObject.nullable().optional(),
      strict: z.boolean().nullable().optional(),
    }).strict(),
  }).strict(),
]).openapi("ResponseFormat", {
  description: "text; json_object (any JSON object); json_schema (output that matches the schema). The output is grammar-constrained.",
});

/** vLLM's structured_outputs (the extension chat and completions share). */
export const StructuredOutputsSchema = z.object({
  json: z.union([JsonSchemaObject, z.string()]).nullable().optional().openapi({ description: "A JSON schema the output matches." }),
  regex: z.string().nullable().optional().openapi({ description: "A regular expression the whole output matches." }),
  choice: z.array(z.string()).max(256).nullable().optional().openapi({ description: "The output is one of these strings." }),
  grammar: z.string().nullable().optional().openapi({ description: "An EBNF grammar (xgrammar's dialect, root rule `root`)." }),
  json_object: z.boolean().nullable().optional().openapi({ description: "Any JSON object." }),
}).strict().nullable().optional().openapi("StructuredOutputs");

export const ToolSchema = z.object({
  type: z.literal("function"),
  function: z.object({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/),
    description: z.string().optional(),
    parameters: JsonSchemaObject.optional(),
    strict: z.boolean().nullable().optional(),
  }).strict(),
}).strict().openapi("Tool");

export const ToolChoiceSchema = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string() }).strict() }).strict(),
]).openapi("ToolChoice");

export const ChatCompletionRequestSchema = requestSchema(CHAT_POLICY, {
  model: z.string().min(1).openapi({ example: "tiny" }),
  messages: z.array(ChatMessageSchema).min(1),
  max_tokens: MaxTokensSchema.openapi({ description: "Deprecated by OpenAI in favour of max_completion_tokens; both work." }),
  max_completion_tokens: MaxTokensSchema,
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  response_format: ResponseFormatSchema.nullable().optional(),
  structured_outputs: StructuredOutputsSchema,
  tools: z.array(ToolSchema).max(128).nullable().optional(),
  tool_choice: ToolChoiceSchema.nullable().optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
  ...samplingFields,
}, "ChatCompletionRequest");

const TopLogprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int()).nullable() });
export const ChatLogprobsSchema = z.object({
  content: z.array(TopLogprob.extend({ top_logprobs: z.array(TopLogprob) })).nullable(),
  refusal: z.null().openapi({ description: "Always null (no refusals)." }),
}).openapi("ChatLogprobs");

/** Chat's finish reasons: stop, length, or tool_calls (the choice ended in tool calls). */
export const ChatFinishReasonSchema = z.enum(["stop", "length", "tool_calls"]);

/** A piece of a tool call in a stream: the first piece of call `index` has its id, type and name,
 * the next ones pieces of its arguments. */
export const ToolCallDeltaSchema = z.object({
  index: z.number().int(),
  id: z.string().optional(),
  type: z.literal("function").optional(),
  function: z.object({ name: z.string().optional(), arguments: z.string().optional() }).optional(),
}).openapi("ToolCallDelta");

export const ChatCompletionSchema = z.object({
  id: z.string(),
  object: z.literal("chat.completion"),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: SystemFingerprintSchema,
  choices: z.array(z.object({
    index: z.number().int(),
    message: z.object({
      role: z.literal("assistant"),
      content: z.string().nullable(),
      refusal: z.null().openapi({ description: "Always null (no refusals)." }),
      tool_calls: z.array(ToolCallSchema).optional().openapi({ description: "The tool calls the model made (with tools)." }),
    }),
    logprobs: ChatLogprobsSchema.nullable(),
    finish_reason: ChatFinishReasonSchema,
    stop_reason: z.union([z.string(), z.number()]).nullable().optional().openapi({
      description: "Extension (vLLM): the stop string or token id that ended the choice.",
    }),
  })),
  usage: UsageSchema,
  prompt_logprobs: PromptLogprobsSchema.nullable().optional().openapi({
    description: "Extension (vLLM): with prompt_logprobs, the rendered prompt's logprobs.",
  }),
}).openapi("ChatCompletion");

export const ChatCompletionChunkSchema = z.object({
  id: z.string(),
  object: z.literal("chat.completion.chunk"),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: SystemFingerprintSchema,
  choices: z.array(z.object({
    index: z.number().int(),
    delta: z.object({
      role: z.literal("assistant").optional(),
      content: z.string().optional(),
      tool_calls: z.array(ToolCallDeltaSchema).optional(),
    }),
    logprobs: ChatLogprobsSchema.nullable(),
    finish_reason: ChatFinishReasonSchema.nullable(),
  })),
  usage: UsageSchema.nullable().optional(),
}).openapi("ChatCompletionChunk");

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;
export type Tool = z.infer<typeof ToolSchema>;
export type ToolChoice = z.infer<typeof ToolChoiceSchema>;
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;
