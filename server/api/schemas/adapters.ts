// adapters.ts — /v1/adapters (REST) and vLLM's /v1/load_lora_adapter, /v1/unload_lora_adapter.
// Request bodies are strict: an unknown field is a 400 naming it.
import { z } from "@hono/zod-openapi";

export const AdapterSchema = z.object({
  id: z.string(),
  object: z.literal("adapter"),
  created: z.number().int(),
  owner: z.string().openapi({ description: "The tenant the adapter belongs to." }),
  base_model: z.string(),
  source: z.enum(["path", "upload"]),
  path: z.string().nullable().openapi({ description: "The folder, relative to the adapter root (null for uploads)." }),
  r: z.number().int(),
  lora_alpha: z.number(),
  use_rslora: z.boolean(),
  target_modules: z.array(z.string()),
  device_bytes: z.number().int(),
  resident: z.boolean(),
}).openapi("Adapter");

export const AdapterListSchema = z.object({ object: z.literal("list"), data: z.array(AdapterSchema) }).openapi("AdapterList");

export const CreateAdapterSchema = z.object({
  id: z.string().min(1).max(128).openapi({ example: "my-adapter" }),
  path: z.string().min(1).max(4096).openapi({ description: "A PEFT folder, relative to the adapter root." }),
  tenant: z.string().optional().openapi({ description: "Admin only: the tenant to register it for." }),
  preload: z.boolean().optional().openapi({ description: "Load it onto the device now (default false)." }),
}).strict().openapi("CreateAdapterRequest");

export const UploadAdapterSchema = z.object({
  id: z.string().min(1).max(128),
  adapter_config: z.any().openapi({ type: "string", format: "binary", description: "adapter_config.json" }),
  adapter_model: z.any().openapi({ type: "string", format: "binary", description: "adapter_model.safetensors" }),
  tenant: z.string().optional(),
}).strict().openapi("UploadAdapterRequest");

export const DeletedSchema = z.object({ id: z.string(), object: z.literal("adapter"), deleted: z.boolean() }).openapi("AdapterDeleted");

export const LoadLoraSchema = z.object({
  lora_name: z.string().min(1).max(128),
  lora_path: z.string().min(1).max(4096),
  load_inplace: z.boolean().optional(),
}).strict().openapi("LoadLoraAdapterRequest");

export const UnloadLoraSchema = z.object({
  lora_name: z.string().min(1).max(128),
  lora_int_id: z.number().int().optional(),
}).strict().openapi("UnloadLoraAdapterRequest");
