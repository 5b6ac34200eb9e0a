// tokenize.ts — vLLM's POST /tokenize and POST /detokenize (its TokenizeCompletionRequest,
// TokenizeChatRequest, TokenizeResponse, DetokenizeRequest, DetokenizeResponse) and GET /version.
import { z } from "@hono/zod-openapi";
import { ChatMessageSchema } from "./chat.ts";

const ModelField = z.string().min(1).optional().openapi({
  description: "The base model's id or one of the caller's adapter ids (default: the base model); all share the tokenizer.",
  example: "stories260K",
});
const ReturnTokenStrs = z.boolean().nullable().optional().openapi({ description: "Also return each token's string." });

export const TokenizeCompletionRequestSchema = z.object({
  model: ModelField,
  prompt: z.string().openapi({ example: "Once upon a time" }),
  add_special_tokens: z.boolean().optional().openapi({ description: "Add the BOS token (default true)." }),
  return_token_strs: ReturnTokenStrs,
}).strict().openapi("TokenizeCompletionRequest");

export const TokenizeChatRequestSchema = z.object({
  model: ModelField,
  messages: z.array(ChatMessageSchema).min(1),
  add_generation_prompt: z.boolean().optional().openapi({ description: "End with the assistant's turn opening (default true)." }),
  add_special_tokens: z.boolean().optional().openapi({
    description: "Add special tokens beyond the template's (default false: the template has them).",
  }),
  return_token_strs: ReturnTokenStrs,
}).strict().openapi("TokenizeChatRequest");

export const TokenizeRequestSchema = z.union([TokenizeCompletionRequestSchema, TokenizeChatRequestSchema]).openapi("TokenizeRequest");

export const TokenizeResponseSchema = z.object({
  count: z.number().int(),
  max_model_len: z.number().int(),
  tokens: z.array(z.number().int()),
  token_strs: z.array(z.string()).nullable(),
}).openapi("TokenizeResponse");

export const DetokenizeRequestSchema = z.object({
  model: ModelField,
  tokens: z.array(z.number().int().min(0)).openapi({ example: [1, 403, 407] }),
}).strict().openapi("DetokenizeRequest");

export const DetokenizeResponseSchema = z.object({ prompt: z.string() }).openapi("DetokenizeResponse");

export const VersionSchema = z.object({ version: z.string().openapi({ example: "1.0.0" }) }).openapi("Version");
