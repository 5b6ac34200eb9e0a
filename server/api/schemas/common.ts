// common.ts — schemas shared by several resources.
import { z } from "@hono/zod-openapi";

export const ErrorSchema = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
}).openapi("Error");

export const UsageSchema = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int() }).nullable().optional(),
}).openapi("Usage");

export const StopSchema = z.union([z.string(), z.array(z.string()).max(16)]).nullable().optional()
  .openapi({ description: "Up to 16 sequences where generation stops; the stop text is not returned." });

export const StreamOptionsSchema = z.object({
  include_usage: z.boolean().nullable().optional(),
  include_obfuscation: z.boolean().nullable().optional().openapi({ description: "Only false: no stream obfuscation." }),
}).strict().nullable().optional();

/** The engine's configuration as OpenAI's system_fingerprint (the same for every response of one server). */
export const SystemFingerprintSchema = z.string().openapi({ description: "The model, quantization and backend this server runs." });

/** OpenAI's finish reasons that this server gives (no tool calls, no content filter). */
export const FinishReasonSchema = z.enum(["stop", "length"]);

/** Sampling fields common to chat and completions (OpenAI's, then the extensions). */
export const samplingFields = {
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  n: z.number().int().min(1).max(16).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: StreamOptionsSchema,
  stop: StopSchema,
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  logit_bias: z.record(z.string(), z.number().min(-100).max(100)).nullable().optional(),
  seed: z.number().int().min(-(2 ** 53 - 1)).max(2 ** 53 - 1).nullable().optional(),
  top_k: z.number().int().min(-1).nullable().optional().openapi({ description: "Extension: keep the k most likely tokens (≤ 0: off)." }),
  min_p: z.number().min(0).max(1).nullable().optional().openapi({
    description: "Extension: drop tokens below min_p × the top probability.",
  }),
  repetition_penalty: z.number().gt(0).max(10).nullable().optional().openapi({
    description: "Extension: Hugging Face's repetition penalty (1: off).",
  }),
  ignore_eos: z.boolean().optional().openapi({ description: "Extension: keep generating past end-of-sequence tokens." }),
  min_tokens: z.number().int().min(0).optional().openapi({ description: "Extension: generate at least this many tokens." }),
  stop_token_ids: z.array(z.number().int().min(0)).max(64).nullable().optional().openapi({
    description: "Extension: extra token ids that end generation.",
  }),
  prompt_logprobs: z.number().int().min(0).max(20).nullable().optional().openapi({
    description: "Extension (vLLM): the prompt tokens' logprobs, with the n most likely tokens at each position (not with stream).",
  }),
};

/** vLLM's prompt_logprobs: per prompt token (the first null), token id → its logprob, its rank
 * among the vocabulary (1: the most likely) and its text; the prompt's own token and the n most likely. */
export const PromptLogprobsSchema = z.array(
  z.record(z.string(), z.object({ logprob: z.number(), rank: z.number().int(), decoded_token: z.string() })).nullable(),
).openapi("PromptLogprobs");

export const MaxTokensSchema = z.number().int().min(1).nullable().optional();
