// chat.ts — POST /v1/chat/completions.
import { z } from "@hono/zod-openapi";
import { MaxTokensSchema, samplingFields, UsageSchema } from "./common.ts";

const ContentPart = z.object({ type: z.literal("text"), text: z.string() });

export const ChatMessageSchema = z.object({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(ContentPart)]).nullable().optional(),
  name: z.string().optional(),
  tool_call_id: z.string().optional(),
}).openapi("ChatMessage");

export const ChatCompletionRequestSchema = z.object({
  model: z.string().min(1).openapi({ example: "tiny" }),
  messages: z.array(ChatMessageSchema).min(1),
  max_tokens: MaxTokensSchema.openapi({ description: "Deprecated by OpenAI in favour of max_completion_tokens; both work." }),
  max_completion_tokens: MaxTokensSchema,
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  ...samplingFields,
}).openapi("ChatCompletionRequest");

const TopLogprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int()).nullable() });
export const ChatLogprobsSchema = z.object({
  content: z.array(TopLogprob.extend({ top_logprobs: z.array(TopLogprob) })).nullable(),
}).openapi("ChatLogprobs");

export const ChatCompletionSchema = z.object({
  id: z.string(),
  object: z.literal("chat.completion"),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: z.string().optional(),
  choices: z.array(z.object({
    index: z.number().int(),
    message: z.object({ role: z.literal("assistant"), content: z.string().nullable() }),
    logprobs: ChatLogprobsSchema.nullable(),
    finish_reason: z.enum(["stop", "length", "abort"]).nullable(),
    stop_reason: z.union([z.string(), z.number()]).nullable().optional(),
  })),
  usage: UsageSchema.nullable().optional(),
}).openapi("ChatCompletion");

export const ChatCompletionChunkSchema = z.object({
  id: z.string(),
  object: z.literal("chat.completion.chunk"),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(z.object({
    index: z.number().int(),
    delta: z.object({ role: z.literal("assistant").optional(), content: z.string().optional() }),
    logprobs: ChatLogprobsSchema.nullable(),
    finish_reason: z.enum(["stop", "length", "abort"]).nullable(),
  })),
  usage: UsageSchema.nullable().optional(),
}).openapi("ChatCompletionChunk");

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;
