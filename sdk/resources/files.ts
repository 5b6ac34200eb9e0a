// files.ts — client.files: fine-tuning data (JSONL, validated on upload; errors name the line).
import { type APIPromise, type RequestOptions, seg } from "../core.ts";
import { CursorPage, type PagePromise } from "../pagination.ts";
import { APIResource } from "../resource.ts";
import { appendFile, nameOf } from "../uploads.ts";
import type { FileCreateParams, FileDeleted, FileListParams, FileObject } from "../types.ts";

export class Files extends APIResource {
  /** Uploads a file (multipart): `{file, purpose: "fine-tune"}`. */
  create(
    params: FileCreateParams,
    options?: RequestOptions,
  ): APIPromise<FileObject> {
    const form = new FormData();
    form.append("purpose", params.purpose);
    appendFile(
      form,
      "file",
      params.file,
      params.filename ?? nameOf(params.file) ?? "file.jsonl",
      "application/jsonl",
    );
    return this._client.post("/files", { ...options, body: form });
  }

  /** The caller's files, page by page (`for await` for all). */
  list(
    params: FileListParams = {},
    options?: RequestOptions,
  ): PagePromise<CursorPage<FileObject>, FileObject> {
    return this._client.getAPIList<CursorPage<FileObject>, FileObject>(
      "/files",
      CursorPage,
      { ...params },
      options,
    );
  }

  retrieve(id: string, options?: RequestOptions): APIPromise<FileObject> {
    return this._client.get(`/files/${seg(id)}`, options);
  }

  /** The file's bytes, as the raw Response (`await (await client.files.content(id)).text()`). */
  content(id: string, options?: RequestOptions): APIPromise<Response> {
    return this._client.get(`/files/${seg(id)}/content`, {
      ...options,
      raw: true,
      headers: { accept: "*/*", ...(options?.headers ?? {}) },
    });
  }

  delete(id: string, options?: RequestOptions): APIPromise<FileDeleted> {
    return this._client.delete(`/files/${seg(id)}`, options);
  }
}
