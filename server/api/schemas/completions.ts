// completions.ts — POST /v1/completions (OpenAI's legacy text completions).
import { z } from "@hono/zod-openapi";
import { MaxTokensSchema, samplingFields, UsageSchema } from "./common.ts";

export const CompletionRequestSchema = z.object({
  model: z.string().min(1).openapi({ description: "The base model's id or an adapter id.", example: "stories260K" }),
  prompt: z.union([
    z.string(),
    z.array(z.string()).min(1).max(64),
    z.array(z.number().int().min(0)).min(1),
    z.array(z.array(z.number().int().min(0)).min(1)).min(1).max(64),
  ]).openapi({ example: "Once upon a time" }),
  max_tokens: MaxTokensSchema.openapi({ description: "Default 16." }),
  logprobs: z.number().int().min(0).max(20).nullable().optional(),
  echo: z.boolean().nullable().optional(),
  best_of: z.number().int().min(1).max(16).nullable().optional(),
  suffix: z.string().nullable().optional(),
  ...samplingFields,
}).openapi("CompletionRequest");

export const CompletionLogprobsSchema = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()),
  text_offset: z.array(z.number().int()),
}).openapi("CompletionLogprobs");

export const CompletionChoiceSchema = z.object({
  index: z.number().int(),
  text: z.string(),
  logprobs: CompletionLogprobsSchema.nullable(),
  finish_reason: z.enum(["stop", "length", "abort"]).nullable(),
  stop_reason: z.union([z.string(), z.number()]).nullable().optional(),
});

export const CompletionSchema = z.object({
  id: z.string(),
  object: z.literal("text_completion"),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: z.string().optional(),
  choices: z.array(CompletionChoiceSchema),
  usage: UsageSchema.nullable().optional(),
}).openapi("Completion");

export type CompletionRequest = z.infer<typeof CompletionRequestSchema>;
export type Completion = z.infer<typeof CompletionSchema>;
