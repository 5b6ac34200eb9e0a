// models.ts — GET /v1/models, GET /v1/models/{id}.
import { z } from "@hono/zod-openapi";

export const ModelSchema = z.object({
  id: z.string(),
  object: z.literal("model"),
  created: z.number().int(),
  owned_by: z.string(),
  root: z.string().nullable().optional(),
  parent: z.string().nullable().optional(),
  max_model_len: z.number().int().optional(),
}).openapi("Model");

export const MemoryReportSchema = z.object({
  quantized_weight_bytes: z.number(),
  quantization_constant_bytes: z.number(),
  unquantized_bytes: z.number(),
  kv_cache_bytes: z.number(),
  kv_cache_budget_bytes: z.number().optional().openapi({ description: "The KV cache's memory budget (--kv-cache-memory)." }),
  kv_cache_blocks: z.number().int().optional(),
  kv_cache_block_size: z.number().int().optional(),
  kv_cache_tokens: z.number().int().optional().openapi({ description: "Tokens the KV cache holds (blocks × block size)." }),
  total_bytes: z.number(),
  quantized_parameters: z.number(),
  bits_per_quantized_parameter: z.number().nullable(),
  resident_adapter_bytes: z.number().optional(),
}).openapi("MemoryReport");

export const ModelDetailSchema = ModelSchema.extend({
  quantization: z.string().optional(),
  backend: z.string().optional(),
  memory: MemoryReportSchema.optional(),
  adapter: z.object({ r: z.number().int(), lora_alpha: z.number(), target_modules: z.array(z.string()), device_bytes: z.number() })
    .optional(),
}).openapi("ModelDetail");

export const ModelListSchema = z.object({ object: z.literal("list"), data: z.array(ModelSchema) }).openapi("ModelList");
