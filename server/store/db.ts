// db.ts — the server's SQLite database (node:sqlite): files, fine-tuning jobs, their events and
// checkpoints. Write-ahead logged (readers never block the writer; a crash loses at most the
// transaction in flight), foreign keys on, schema versions applied in order by `migrate`.
// Every row carries the tenant that made it; the queries that serve the API filter by it.
import { DatabaseSync } from "node:sqlite";

export type Row = Record<string, unknown>;

/** Schema versions: MIGRATIONS[i] takes the database from version i to i + 1. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    path TEXT NOT NULL,
    examples INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX files_tenant ON files(tenant, seq);

  CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    training_file TEXT NOT NULL,
    validation_file TEXT,
    suffix TEXT,
    seed INTEGER NOT NULL,
    metadata TEXT,
    method TEXT NOT NULL,
    hyper TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    error TEXT,
    fine_tuned_model TEXT,
    trained_tokens INTEGER,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX jobs_tenant ON jobs(tenant, seq);
  CREATE INDEX jobs_status ON jobs(status, seq);

  CREATE TABLE job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    level TEXT NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
  );
  CREATE INDEX job_events_job ON job_events(job_id, seq);

  CREATE TABLE job_checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    dir TEXT NOT NULL,
    metrics TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, step)
  );
  `,
  // the example formats a file holds (comma-separated: chat, prompt, preference), known at upload;
  // NULL for files uploaded before (checked when their job runs)
  `ALTER TABLE files ADD COLUMN kinds TEXT;`,
  // a running job asked to pause (its runner checkpoints at the next micro-batch and marks it paused)
  `ALTER TABLE jobs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;`,
  // the files a finished job produced (OpenAI's result_files: the step-metrics CSV), a JSON array
  `ALTER TABLE jobs ADD COLUMN result_files TEXT;`,
  // fine-tuned models (results and checkpoints) their tenant deleted: never published again
  `CREATE TABLE deleted_models (model_id TEXT PRIMARY KEY, deleted_at INTEGER NOT NULL);`,
];

export class Store {
  readonly db: DatabaseSync;

  /** Opens (creating if needed) the database at `path` (":memory:" for tests) and migrates it. */
  constructor(readonly path: string) {
    if (path !== ":memory:" && path.includes("/")) Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true });
    this.db = new DatabaseSync(path);
    if (path !== ":memory:") this.db.exec("PRAGMA journal_mode = WAL");
    this.db.exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000");
    this.migrate();
  }

  /** The journal mode in effect ("wal" for files). */
  get journalMode(): string {
    return String((this.db.prepare("PRAGMA journal_mode").get() as Row).journal_mode);
  }

  get version(): number {
    return Number((this.db.prepare("PRAGMA user_version").get() as Row).user_version);
  }

  migrate(): void {
    for (let v = this.version; v < MIGRATIONS.length; v++) {
      this.transaction(() => {
        this.db.exec(MIGRATIONS[v]);
        this.db.exec(`PRAGMA user_version = ${v + 1}`);
      });
    }
  }

  transaction<T>(fn: () => T): T {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      const out = fn();
      this.db.exec("COMMIT");
      return out;
    } catch (e) {
      this.db.exec("ROLLBACK");
      throw e;
    }
  }

  run(sql: string, ...params: (string | number | bigint | null | Uint8Array)[]): { changes: number; lastInsertRowid: number } {
    const r = this.db.prepare(sql).run(...params);
    return { changes: Number(r.changes), lastInsertRowid: Number(r.lastInsertRowid) };
  }

  get<T = Row>(sql: string, ...params: (string | number | bigint | null)[]): T | undefined {
    return this.db.prepare(sql).get(...params) as T | undefined;
  }

  all<T = Row>(sql: string, ...params: (string | number | bigint | null)[]): T[] {
    return this.db.prepare(sql).all(...params) as T[];
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}

/** An id with a prefix and 24 random base-36-ish characters (OpenAI's style: file-…, ftjob-…). */
export function newId(prefix: string): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `${prefix}-${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("")}`;
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);
