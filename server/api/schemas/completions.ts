// completions.ts — POST /v1/completions (OpenAI's legacy text completions).
import { z } from "@hono/zod-openapi";
import {
  FinishReasonSchema,
  MaxTokensSchema,
  PromptLogprobsSchema,
  samplingFields,
  SystemFingerprintSchema,
  UsageSchema,
} from "./common.ts";
import { COMPLETIONS_POLICY, requestSchema } from "./request_policy.ts";
import { StructuredOutputsSchema } from "./chat.ts";

/** The implemented fields' schemas; which fields are implemented, recorded or refused is
 * decided in request_policy.ts (COMPLETIONS_POLICY). */
export const CompletionRequestSchema = requestSchema(COMPLETIONS_POLICY, {
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
  structured_outputs: StructuredOutputsSchema,
  ...samplingFields,
}, "CompletionRequest");

export const CompletionLogprobsSchema = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()).openapi({ description: "With echo, the first prompt token's is null (as OpenAI's)." }),
  top_logprobs: z.array(z.record(z.string(), z.number()).nullable()),
  text_offset: z.array(z.number().int()),
}).openapi("CompletionLogprobs");

export const CompletionChoiceSchema = z.object({
  index: z.number().int(),
  text: z.string(),
  logprobs: CompletionLogprobsSchema.nullable(),
  finish_reason: FinishReasonSchema,
  stop_reason: z.union([z.string(), z.number()]).nullable().optional().openapi({
    description: "Extension (vLLM): the stop string or token id that ended the choice.",
  }),
  prompt_logprobs: PromptLogprobsSchema.nullable().optional().openapi({ description: "Extension (vLLM): with prompt_logprobs." }),
});

export const CompletionSchema = z.object({
  id: z.string(),
  object: z.literal("text_completion"),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: SystemFingerprintSchema,
  choices: z.array(CompletionChoiceSchema),
  usage: UsageSchema.nullable().optional(),
}).openapi("Completion");

/** A streamed chunk: a choice's text so far is sent as it comes; finish_reason only on its last
 * chunk (null before). */
export const CompletionChunkSchema = CompletionSchema.extend({
  choices: z.array(CompletionChoiceSchema.extend({ finish_reason: FinishReasonSchema.nullable() })),
}).openapi("CompletionChunk");

export type CompletionRequest = z.infer<typeof CompletionRequestSchema>;
export type Completion = z.infer<typeof CompletionSchema>;
