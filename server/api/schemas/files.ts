// files.ts — /v1/files in OpenAI's shapes (files for fine-tuning).
import { z } from "@hono/zod-openapi";

export const FileObjectSchema = z.object({
  id: z.string().openapi({ example: "file-abc123" }),
  object: z.literal("file"),
  bytes: z.number().int(),
  created_at: z.number().int(),
  filename: z.string(),
  purpose: z.string().openapi({ example: "fine-tune" }),
  status: z.literal("processed").openapi({
    description: "Deprecated in OpenAI's API; always processed here (files are validated on upload).",
  }),
  status_details: z.string().optional().openapi({ description: "Absent: files are validated on upload." }),
  expires_at: z.number().int().optional().openapi({ description: "Absent: files do not expire." }),
}).openapi("FileObject");

export const FileListSchema = z.object({
  object: z.literal("list"),
  data: z.array(FileObjectSchema),
  first_id: z.string().nullable(),
  last_id: z.string().nullable(),
  has_more: z.boolean(),
}).openapi("FileList");

export const FileDeletedSchema = z.object({ id: z.string(), object: z.literal("file"), deleted: z.boolean() }).openapi("FileDeleted");

export const UploadFileSchema = z.object({
  file: z.any().openapi({
    type: "string",
    format: "binary",
    description:
      'JSONL: one {"messages": [...]} (optional per-message "weight" 0/1 on assistant messages) or {"prompt", "completion"} per line.',
  }),
  purpose: z.string().openapi({ example: "fine-tune", description: 'Only "fine-tune" is accepted.' }),
}).strict().openapi("UploadFileRequest");

export const FileListQuerySchema = z.object({
  purpose: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(10000).optional(),
  after: z.string().optional(),
  order: z.enum(["asc", "desc"]).optional(),
});

export const FileIdParam = z.object({ file_id: z.string().openapi({ param: { name: "file_id", in: "path" }, example: "file-abc123" }) });
