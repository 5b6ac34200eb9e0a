// files.ts — uploaded files (OpenAI's /v1/files): fine-tuning data validated on upload (JSONL,
// errors name the line), stored under the data folder (temp file, fsync, rename), one row per
// file in SQLite. Scoped by tenant: another tenant's file looks exactly like a missing one.
import { DatasetError, type Example, parseJsonl } from "../training/dataset.ts";
import { newId, nowSeconds, type Store } from "./db.ts";
import { ClientError } from "../util/errors.ts";
import { syncDir } from "../util/fs.ts";
import type { Caller } from "../util/caller.ts";

export interface FileRecord {
  id: string;
  tenant: string;
  filename: string;
  purpose: string;
  bytes: number;
  createdAt: number;
  path: string;
  examples: number;
  /** The example formats in the file (null: uploaded before formats were recorded). */
  kinds: Example["kind"][] | null;
}

export const FILE_PURPOSES = ["fine-tune"] as const;
export const DEFAULT_MAX_FILE_BYTES = 32 << 20;
export const DEFAULT_MAX_EXAMPLES = 100_000;

interface FileRow {
  id: string;
  tenant: string;
  filename: string;
  purpose: string;
  bytes: number;
  created_at: number;
  path: string;
  examples: number;
  kinds: string | null;
}

const toRecord = (r: FileRow): FileRecord => ({
  id: r.id,
  tenant: r.tenant,
  filename: r.filename,
  purpose: r.purpose,
  bytes: Number(r.bytes),
  createdAt: Number(r.created_at),
  path: r.path,
  examples: Number(r.examples),
  kinds: r.kinds === null || r.kinds === undefined ? null : r.kinds.split(",") as Example["kind"][],
});

/** Writes bytes to `path` atomically: a temp file in the same folder, fsync, rename, fsync the folder. */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const tmp = `${dir}/.${path.slice(dir.length + 1)}.tmp-${crypto.randomUUID()}`;
  const f = await Deno.open(tmp, { write: true, createNew: true });
  try {
    let off = 0;
    while (off < data.length) off += await f.write(data.subarray(off));
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  await Deno.rename(tmp, path);
  await syncDir(dir);
}

/** What validating a fine-tuning file tells: its example count and formats. */
export type FileSummary = { examples: number; kinds: Example["kind"][] };

/** Validates a fine-tuning file's text (training/dataset.ts's parser), throwing its DatasetError. */
export type FileValidator = (tenant: string, text: string, maxExamples: number) => Promise<FileSummary>;

const validateInline: FileValidator = (_tenant, text, maxExamples) => {
  const parsed = parseJsonl(text, { maxExamples });
  return Promise.resolve({ examples: parsed.length, kinds: [...new Set(parsed.map((e) => e.kind))].sort() });
};

export class FileStore {
  readonly maxBytes: number;
  readonly maxExamples: number;
  /** Where uploads are validated: inline by default; the server hands it to the tokenizer pool,
   * off the HTTP thread (parsing tens of MB of JSONL takes about a second). */
  validate: FileValidator = validateInline;

  constructor(
    readonly store: Store,
    readonly dir: string,
    opts: { maxBytes?: number; maxExamples?: number; sweepTemp?: boolean } = {},
  ) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.maxExamples = opts.maxExamples ?? DEFAULT_MAX_EXAMPLES;
    Deno.mkdirSync(dir, { recursive: true });
    if (opts.sweepTemp) this.#sweepTemp();
  }

  /** Removes the temp files of writes that a crash interrupted (never renamed into place). Only
   * at start, before any upload can be in flight. */
  #sweepTemp(): void {
    for (const e of Deno.readDirSync(this.dir)) {
      if (e.isFile && e.name.startsWith(".") && e.name.includes(".tmp-")) Deno.removeSync(`${this.dir}/${e.name}`);
    }
  }

  /** Validates and stores an upload. */
  async create(caller: Caller, filename: string, purpose: string, data: Uint8Array): Promise<FileRecord> {
    if (!(FILE_PURPOSES as readonly string[]).includes(purpose)) {
      throw new ClientError(
        400,
        `purpose must be one of ${FILE_PURPOSES.join(", ")} (got ${JSON.stringify(purpose)})`,
        "invalid_value",
        "purpose",
      );
    }
    if (data.byteLength > this.maxBytes) {
      throw new ClientError(413, `the file is ${data.byteLength} bytes; the limit is ${this.maxBytes}`, "file_too_large", "file");
    }
    if (data.byteLength === 0) throw new ClientError(400, "the file is empty", "invalid_file", "file");
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(data);
    } catch {
      throw new ClientError(400, "the file is not valid UTF-8 text", "invalid_file", "file");
    }
    let examples: number, kinds: Example["kind"][];
    try {
      ({ examples, kinds } = await this.validate(caller.tenant, text, this.maxExamples));
    } catch (e) {
      if (e instanceof DatasetError) throw new ClientError(400, `invalid fine-tuning file: ${e.message}`, "invalid_file", "file");
      throw e;
    }
    return await this.#store(caller.tenant, filename, purpose, "jsonl", data, examples, kinds);
  }

  /** Stores a file the server made for a tenant (a job's results: purpose "fine-tune-results"). */
  async createResult(tenant: string, filename: string, data: Uint8Array): Promise<FileRecord> {
    return await this.#store(tenant, filename, "fine-tune-results", "csv", data, 0, null);
  }

  /** Writes the bytes atomically, then records the file. */
  async #store(
    tenant: string,
    filename: string,
    purpose: string,
    ext: string,
    data: Uint8Array,
    examples: number,
    kinds: Example["kind"][] | null,
  ): Promise<FileRecord> {
    const id = newId("file");
    const path = `${this.dir}/${id}.${ext}`;
    await writeFileAtomic(path, data);
    const rec: FileRecord = {
      id,
      tenant,
      filename: safeName(filename),
      purpose,
      bytes: data.byteLength,
      createdAt: nowSeconds(),
      path,
      examples,
      kinds,
    };
    this.store.run(
      "INSERT INTO files (id, tenant, filename, purpose, bytes, created_at, path, examples, kinds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      rec.id,
      rec.tenant,
      rec.filename,
      rec.purpose,
      rec.bytes,
      rec.createdAt,
      rec.path,
      rec.examples,
      kinds === null ? null : kinds.join(","),
    );
    return rec;
  }

  /** The caller's file (an admin sees every tenant's), or undefined. */
  get(caller: Caller, id: string): FileRecord | undefined {
    const r = caller.admin
      ? this.store.get<FileRow>("SELECT * FROM files WHERE id = ? AND deleted = 0", id)
      : this.store.get<FileRow>("SELECT * FROM files WHERE id = ? AND tenant = ? AND deleted = 0", id, caller.tenant);
    return r ? toRecord(r) : undefined;
  }

  /** Like get, but a missing file is a 404 naming `param`. */
  require(caller: Caller, id: string, param = "file_id"): FileRecord {
    const f = this.get(caller, id);
    if (!f) throw new ClientError(404, `no file with id "${id}"`, "file_not_found", param);
    return f;
  }

  /** The tenant's stored files: how many and their bytes (the files quota, api/quotas.ts). */
  usage(tenant: string): { files: number; bytes: number } {
    const r = this.store.get<{ n: number; b: number | null }>(
      "SELECT COUNT(*) AS n, SUM(bytes) AS b FROM files WHERE tenant = ? AND deleted = 0",
      tenant,
    );
    return { files: Number(r?.n ?? 0), bytes: Number(r?.b ?? 0) };
  }

  /** Newest first; `after` is a file id of the previous page. */
  list(
    caller: Caller,
    opts: { after?: string; limit?: number; purpose?: string; order?: "asc" | "desc" } = {},
  ): { data: FileRecord[]; hasMore: boolean } {
    const limit = Math.max(1, Math.min(opts.limit ?? 10_000, 10_000));
    const desc = (opts.order ?? "desc") === "desc";
    const where: string[] = ["deleted = 0"];
    const params: (string | number)[] = [];
    if (!caller.admin) {
      where.push("tenant = ?");
      params.push(caller.tenant);
    }
    if (opts.purpose) {
      where.push("purpose = ?");
      params.push(opts.purpose);
    }
    if (opts.after) {
      const a = this.get(caller, opts.after);
      if (!a) throw new ClientError(400, `after: no file with id "${opts.after}"`, "invalid_value", "after");
      where.push(desc ? "seq < (SELECT seq FROM files WHERE id = ?)" : "seq > (SELECT seq FROM files WHERE id = ?)");
      params.push(opts.after);
    }
    const rows = this.store.all<FileRow>(
      `SELECT * FROM files WHERE ${where.join(" AND ")} ORDER BY seq ${desc ? "DESC" : "ASC"} LIMIT ?`,
      ...params,
      limit + 1,
    );
    return { data: rows.slice(0, limit).map(toRecord), hasMore: rows.length > limit };
  }

  async content(caller: Caller, id: string): Promise<Uint8Array> {
    const f = this.require(caller, id);
    return await Deno.readFile(f.path);
  }

  /** The file's text, for the trainer (no tenant check: the job checked when it was made). */
  async textById(id: string): Promise<string | null> {
    const r = this.store.get<FileRow>("SELECT * FROM files WHERE id = ? AND deleted = 0", id);
    if (!r) return null;
    try {
      return await Deno.readTextFile(r.path);
    } catch {
      return null;
    }
  }

  async delete(caller: Caller, id: string): Promise<FileRecord> {
    const f = this.require(caller, id);
    this.store.run("UPDATE files SET deleted = 1 WHERE id = ?", f.id);
    await Deno.remove(f.path).catch(() => {});
    return f;
  }
}

function safeName(name: string): string {
  // deno-lint-ignore no-control-regex
  const base = (name || "upload.jsonl").split(/[\\/]/).pop()!.replace(/[\u0000-\u001f]/g, "");
  return base.slice(0, 255) || "upload.jsonl";
}
