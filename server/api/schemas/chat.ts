// chat.ts — POST /v1/chat/completions. Which request fields are implemented, recorded or refused
// is decided in request_policy.ts (CHAT_POLICY); this file holds the implemented fields' schemas.
import { z } from "@hono/zod-openapi";
import {
  FinishReasonSchema,
  MaxTokensSchema,
  PromptLogprobsSchema,
  samplingFields,
  SystemFingerprintSchema,
  UsageSchema,
} from "./common.ts";
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

/** The fields of a message, decided as the request's are (tool calls in messages: not yet). */
export const MESSAGE_POLICY: Policy = {
  role: { kind: "implemented", note: "system, developer, user, assistant or tool." },
  content: { kind: "implemented", note: "A string or text parts." },
  name: { kind: "implemented", note: "Passed to the chat template." },
  tool_call_id: { kind: "implemented", note: "Passed to the chat template (tool messages)." },
  tool_calls: { kind: "unsupported", note: "Not supported (tool calling is not implemented yet).", schema: z.unknown(), example: [] },
  function_call: { kind: "unsupported", note: "Not supported (tool calling is not implemented yet).", schema: z.unknown(), example: {} },
  audio: { kind: "unsupported", note: "Not supported (no audio).", schema: z.unknown(), example: { id: "a" } },
  refusal: { kind: "unsupported", note: "Not supported (no refusals).", schema: z.unknown(), example: "no" },
};

export const ChatMessageSchema = policySchema(MESSAGE_POLICY, {
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(ContentPart)]).nullable().optional(),
  name: z.string().optional(),
  tool_call_id: z.string().optional(),
}, "ChatMessage").openapi("ChatMessage");

export const ChatCompletionRequestSchema = requestSchema(CHAT_POLICY, {
  model: z.string().min(1).openapi({ example: "tiny" }),
  messages: z.array(ChatMessageSchema).min(1),
  max_tokens: MaxTokensSchema.openapi({ description: "Deprecated by OpenAI in favour of max_completion_tokens; both work." }),
  max_completion_tokens: MaxTokensSchema,
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  ...samplingFields,
}, "ChatCompletionRequest");

const TopLogprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int()).nullable() });
export const ChatLogprobsSchema = z.object({
  content: z.array(TopLogprob.extend({ top_logprobs: z.array(TopLogprob) })).nullable(),
  refusal: z.null().openapi({ description: "Always null (no refusals)." }),
}).openapi("ChatLogprobs");

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
    }),
    logprobs: ChatLogprobsSchema.nullable(),
    finish_reason: FinishReasonSchema,
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
    delta: z.object({ role: z.literal("assistant").optional(), content: z.string().optional() }),
    logprobs: ChatLogprobsSchema.nullable(),
    finish_reason: FinishReasonSchema.nullable(),
  })),
  usage: UsageSchema.nullable().optional(),
}).openapi("ChatCompletionChunk");

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;
