// memory.ts — POST /v1/memory/plan: the memory planner (serving/memory_plan.ts) over HTTP.
import { z } from "@hono/zod-openapi";
import { LORA_MODULES } from "../../model/llama.ts";

const Modules = z.array(z.enum(LORA_MODULES)).min(1).optional().openapi({ description: "LoRA target modules (default: all seven)." });

export const MemoryPlanRequestSchema = z.object({
  model: z.string().min(1).optional().openapi({
    description:
      "The served base model's id (default), or a named shape: llama-7b, llama-13b, llama-33b, llama-65b, tinyllama-1.1b, smollm-135m.",
    example: "llama-7b",
  }),
  quant: z.enum(["nf4", "fp4", "int4", "none"]).optional().openapi({ description: "Default: the served model's (nf4 for a named shape)." }),
  double_quant: z.boolean().optional().openapi({ description: "Quantize the quantization constants (default true)." }),
  blocksize: z.union([z.literal(64), z.literal(128), z.literal(256)]).optional(),
  kv_tokens: z.number().int().min(0).max(2 ** 31).optional().openapi({
    description: "Serving: tokens the KV cache holds in all (sequences × context).",
  }),
  kv_dtype: z.enum(["bf16", "f32"]).optional(),
  adapters: z.object({ count: z.number().int().min(0).max(1_000_000), r: z.number().int().min(1).max(4096), target_modules: Modules })
    .strict().optional().openapi({ description: "Serving: resident LoRA adapters." }),
  training: z.object({
    r: z.number().int().min(1).max(4096),
    target_modules: Modules,
    tokens_per_step: z.number().int().min(1).max(2 ** 24).openapi({ description: "Tokens in one micro-batch (batch × sequence length)." }),
    gradient_checkpointing: z.boolean().optional(),
    activations: z.enum(["bf16", "f32"]).optional(),
    optimizer_budget_bytes: z.number().int().min(0).optional().openapi({
      description: "Paged AdamW's resident budget (default: all resident).",
    }),
  }).strict().optional().openapi({ description: "Plan a LoRA training job instead of serving." }),
  budget_bytes: z.number().int().min(0).optional().openapi({ description: "Memory available: the answer says whether the plan fits." }),
}).strict().openapi("MemoryPlanRequest");

export const MemoryPlanSchema = z.object({
  model: z.string(),
  quantized_weight_bytes: z.number(),
  quantization_constant_bytes: z.number(),
  unquantized_bytes: z.number(),
  kv_cache_bytes: z.number(),
  adapter_bytes: z.number(),
  lora_parameter_bytes: z.number(),
  lora_gradient_bytes: z.number(),
  optimizer_state_bytes: z.number(),
  activation_bytes: z.number(),
  transient_bytes: z.number(),
  load_buffer_bytes: z.number(),
  runtime_bytes: z.number(),
  total_bytes: z.number().openapi({ description: "The planned peak resident memory." }),
  bits_per_quantized_parameter: z.number().nullable(),
  budget_bytes: z.number().nullable(),
  fits: z.boolean().nullable(),
}).openapi("MemoryPlan");
