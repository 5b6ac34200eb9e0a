// quotas.ts — the per-tenant storage and job quotas of limits.ts, checked where a tenant adds
// something: a file (max_files, max_file_bytes), an adapter (max_adapters, max_adapter_bytes), a
// fine-tuning job (max_running_jobs; and, since the job will add a model, max_adapters counting the
// tenant's unfinished jobs as models to come). Past a quota: 429 insufficient_quota naming the
// limit and what the tenant has (OpenAI's code for a quota; deleting something frees it).
// Checkpoints a job publishes are not counted: they come and go with their job.
import type { AppDeps } from "./deps.ts";
import type { Caller } from "../util/caller.ts";
import { ClientError } from "../util/errors.ts";
import { isCheckpointModelId } from "../jobs/types.ts";
import type { TenantLimits } from "./limits.ts";

function exceeded(tenant: string, limit: keyof TenantLimits, value: number, has: string, free: string): ClientError {
  return new ClientError(
    429,
    `tenant "${tenant}" ${has}; its limit is ${limit} = ${value}. ${free}`,
    "insufficient_quota",
  );
}

const GiB = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

/** Before storing a file of `bytes` for the caller. */
export function checkFileQuota(deps: AppDeps, caller: Caller, bytes: number): void {
  if (!deps.files) return;
  const l = deps.keys.limitsOf(caller.tenant), u = deps.files.usage(caller.tenant);
  if (u.files + 1 > l.max_files) {
    throw exceeded(caller.tenant, "max_files", l.max_files, `has ${u.files} files`, "Delete files (DELETE /v1/files/{id}) to upload more.");
  }
  if (u.bytes + bytes > l.max_file_bytes) {
    throw exceeded(
      caller.tenant,
      "max_file_bytes",
      l.max_file_bytes,
      `has ${u.bytes} bytes of files (${GiB(u.bytes)}) and this one is ${bytes}`,
      "Delete files to upload more.",
    );
  }
}

/** The tenant's adapters and models that count against its quota. */
function adapterUsage(deps: AppDeps, tenant: string): { adapters: number; bytes: number } {
  const own = deps.registry.list({ tenant, admin: false }).filter((r) => r.tenant === tenant && !isCheckpointModelId(r.id));
  return { adapters: own.length, bytes: own.reduce((a, r) => a + r.deviceBytes, 0) };
}

/** Before registering or uploading an adapter (its device bytes when known). */
export function checkAdapterQuota(deps: AppDeps, caller: Caller, bytes = 0): void {
  const l = deps.keys.limitsOf(caller.tenant), u = adapterUsage(deps, caller.tenant);
  const coming = deps.jobs?.unfinished(caller.tenant) ?? 0;
  if (u.adapters + coming + 1 > l.max_adapters) {
    throw exceeded(
      caller.tenant,
      "max_adapters",
      l.max_adapters,
      `has ${u.adapters} adapters and models${coming ? ` and ${coming} unfinished fine-tuning jobs that will add one each` : ""}`,
      "Delete adapters or fine-tuned models to add more.",
    );
  }
  if (u.bytes + bytes > l.max_adapter_bytes) {
    throw exceeded(
      caller.tenant,
      "max_adapter_bytes",
      l.max_adapter_bytes,
      `has ${u.bytes} bytes of adapters (${GiB(u.bytes)})${bytes ? ` and this one is ${bytes}` : ""}`,
      "Delete adapters or fine-tuned models to add more.",
    );
  }
}

/** Before creating a fine-tuning job. */
export function checkJobQuota(deps: AppDeps, caller: Caller): void {
  const l = deps.keys.limitsOf(caller.tenant), running = deps.jobs?.unfinished(caller.tenant) ?? 0;
  if (running + 1 > l.max_running_jobs) {
    throw exceeded(
      caller.tenant,
      "max_running_jobs",
      l.max_running_jobs,
      `has ${running} fine-tuning jobs not finished`,
      "Wait for one to finish, or cancel one.",
    );
  }
  checkAdapterQuota(deps, caller);
}
