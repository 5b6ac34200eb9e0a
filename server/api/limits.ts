// limits.ts — the per-tenant limits a keys file may set, each written once here: its meaning (the
// README's table and the error messages quote it), its default and its check. A key entry may
// set any of them for its tenant; `defaults` at the top of the file changes the default for every
// tenant. When a tenant has several keys that disagree, the smallest value holds.
//
//   {"defaults": {"max_running_jobs": 1},
//    "keys": [{"key": "sk-…", "tenant": "acme", "tokens_per_minute": 20000, "weight": 2}, …]}

export interface TenantLimits {
  /** Generation requests (choices) running or waiting at once; null: the server's default share. */
  max_concurrent_requests: number | null;
  /** Prompt and completion tokens per rolling minute; null: unlimited. */
  tokens_per_minute: number | null;
  /** Adapters registered or uploaded plus fine-tuned models (a job's checkpoints not counted). */
  max_adapters: number;
  /** Their device bytes in all. */
  max_adapter_bytes: number;
  /** Uploaded and result files. */
  max_files: number;
  /** Their bytes in all. */
  max_file_bytes: number;
  /** Fine-tuning jobs not yet finished (validating, queued, running or paused). */
  max_running_jobs: number;
  /** The tenant's share of the batch relative to others' when they compete (default 1). */
  weight: number;
}

export const LIMIT_DEFAULTS: Readonly<TenantLimits> = Object.freeze({
  max_concurrent_requests: null,
  tokens_per_minute: null,
  max_adapters: 100,
  max_adapter_bytes: 8 * 2 ** 30,
  max_files: 1000,
  max_file_bytes: 8 * 2 ** 30,
  max_running_jobs: 8,
  weight: 1,
});

export const LIMIT_NAMES = Object.keys(LIMIT_DEFAULTS) as (keyof TenantLimits)[];

/** The limits set in `obj` (a key entry or `defaults`), checked; `where` names it in errors. A
 * field that is neither a limit nor one of `others` is an error (a misspelt limit must not pass
 * for no limit). */
export function parseLimits(obj: Record<string, unknown>, where: string, others: string[] = []): Partial<TenantLimits> {
  const unknown = Object.keys(obj).filter((k) => !(LIMIT_NAMES as string[]).includes(k) && !others.includes(k));
  if (unknown.length) throw new Error(`${where}: unknown field ${unknown.join(", ")} (limits are ${LIMIT_NAMES.join(", ")})`);
  const out: Partial<Record<keyof TenantLimits, number>> = {};
  for (const name of LIMIT_NAMES) {
    const v = obj[name];
    if (v === undefined || v === null) continue;
    const ok = name === "weight"
      ? typeof v === "number" && Number.isFinite(v) && v > 0 && v <= 1000
      : Number.isSafeInteger(v) && (v as number) >= (name.startsWith("max_") && name !== "max_concurrent_requests" ? 0 : 1);
    if (!ok) {
      throw new Error(
        `${where}: ${name} must be ${name === "weight" ? "a number in (0, 1000]" : "a non-negative integer (positive for rates)"}`,
      );
    }
    out[name] = v as number;
  }
  return out;
}

/** The smaller of two settings per limit (absent: the other). */
export function tighter(a: Partial<TenantLimits>, b: Partial<TenantLimits>): Partial<TenantLimits> {
  const out: Partial<Record<keyof TenantLimits, number>> = { ...a } as Partial<Record<keyof TenantLimits, number>>;
  for (const name of LIMIT_NAMES) {
    const v = b[name];
    if (v === undefined || v === null) continue;
    const cur = out[name];
    out[name] = cur === undefined ? v : Math.min(cur, v);
  }
  return out;
}
