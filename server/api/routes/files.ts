// files.ts — /v1/files (OpenAI's shapes): upload (multipart, purpose "fine-tune"; JSONL checked
// on upload, errors name the line; a size limit), list (cursor pages), retrieve, content, delete.
// Files belong to the caller's tenant; another tenant's file answers 404.
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Caller } from "../../util/caller.ts";
import { errorContent as err } from "./shared.ts";
import {
  FileDeletedSchema,
  FileIdParam,
  FileListQuerySchema,
  FileListSchema,
  FileObjectSchema,
  UploadFileSchema,
} from "../schemas/files.ts";
import type { AppEnv } from "../deps.ts";
import { ClientError } from "../../util/errors.ts";
import type { FileRecord, FileStore } from "../../store/files.ts";

export interface FilesDeps {
  files: FileStore;
  /** Throws when the caller may not store `bytes` more (the files quota). */
  checkQuota?(caller: Caller, bytes: number): void;
}

export function fileObject(f: FileRecord) {
  return {
    id: f.id,
    object: "file" as const,
    bytes: f.bytes,
    created_at: f.createdAt,
    filename: f.filename,
    purpose: f.purpose,
    status: "processed" as const,
    // no status_details (nothing went wrong) and no expires_at (files do not expire): OpenAI's
    // schema wants a string / an integer or the field absent
  };
}

const routes = {
  upload: createRoute({
    method: "post",
    path: "/v1/files",
    tags: ["Files"],
    summary: "Uploads a JSONL file for fine-tuning (validated now; errors name the line).",
    request: { body: { required: true, content: { "multipart/form-data": { schema: UploadFileSchema } } } },
    responses: {
      200: { description: "The stored file", content: { "application/json": { schema: FileObjectSchema } } },
      400: err("Invalid file or purpose"),
      401: err("Missing or wrong API key"),
      413: err("The file is larger than the limit"),
    },
  }),
  list: createRoute({
    method: "get",
    path: "/v1/files",
    tags: ["Files"],
    summary: "Lists the caller's files, newest first (cursor pages: after, limit).",
    request: { query: FileListQuerySchema },
    responses: {
      200: { description: "Files", content: { "application/json": { schema: FileListSchema } } },
      400: err("Invalid cursor"),
      401: err("Missing or wrong API key"),
    },
  }),
  get: createRoute({
    method: "get",
    path: "/v1/files/{file_id}",
    tags: ["Files"],
    summary: "One file.",
    request: { params: FileIdParam },
    responses: {
      200: { description: "The file", content: { "application/json": { schema: FileObjectSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such file"),
    },
  }),
  content: createRoute({
    method: "get",
    path: "/v1/files/{file_id}/content",
    tags: ["Files"],
    summary: "The file's bytes.",
    request: { params: FileIdParam },
    responses: {
      200: { description: "The content", content: { "application/octet-stream": { schema: z.string().openapi({ format: "binary" }) } } },
      401: err("Missing or wrong API key"),
      404: err("No such file"),
    },
  }),
  delete: createRoute({
    method: "delete",
    path: "/v1/files/{file_id}",
    tags: ["Files"],
    summary: "Deletes a file.",
    request: { params: FileIdParam },
    responses: {
      200: { description: "Deleted", content: { "application/json": { schema: FileDeletedSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such file"),
    },
  }),
};

export function registerFilesRoutes(app: OpenAPIHono<AppEnv>, deps: FilesDeps): void {
  const files = deps.files;

  app.openapi(routes.upload, async (c) => {
    const form = c.req.valid("form") as Record<string, unknown>;
    const purpose = form.purpose;
    if (typeof purpose !== "string") throw new ClientError(400, "purpose is required", "invalid_value", "purpose");
    const file = form.file;
    if (!(file instanceof Blob)) throw new ClientError(400, "file is required (a multipart file field)", "invalid_value", "file");
    if (file.size > files.maxBytes) {
      throw new ClientError(413, `the file is ${file.size} bytes; the limit is ${files.maxBytes}`, "file_too_large", "file");
    }
    const name = file instanceof File ? file.name : "upload.jsonl";
    deps.checkQuota?.(c.get("principal"), file.size);
    const rec = await files.create(c.get("principal"), name, purpose, new Uint8Array(await file.arrayBuffer()));
    return c.json(fileObject(rec), 200);
  });

  app.openapi(routes.list, (c) => {
    const q = c.req.valid("query");
    const page = files.list(c.get("principal"), { after: q.after, limit: q.limit, purpose: q.purpose, order: q.order });
    const data = page.data.map(fileObject);
    return c.json({
      object: "list" as const,
      data,
      first_id: data[0]?.id ?? null,
      last_id: data.at(-1)?.id ?? null,
      has_more: page.hasMore,
    }, 200);
  });

  app.openapi(routes.get, (c) => {
    const { file_id } = c.req.valid("param");
    const f = files.get(c.get("principal"), file_id);
    if (!f) throw new ClientError(404, `no file with id "${file_id}"`, "file_not_found", "file_id");
    return c.json(fileObject(f), 200);
  });

  app.openapi(routes.content, async (c) => {
    const { file_id } = c.req.valid("param");
    const bytes = await files.content(c.get("principal"), file_id);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { "content-type": "application/octet-stream" });
  });

  app.openapi(routes.delete, async (c) => {
    const { file_id } = c.req.valid("param");
    const f = await files.delete(c.get("principal"), file_id);
    return c.json({ id: f.id, object: "file" as const, deleted: true }, 200);
  });
}
