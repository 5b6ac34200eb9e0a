// training.ts — fine-tuning jobs next to serving, on one loaded base.
//
// The JobRunner that trains lives in the engine worker and trains on the very model the engine
// serves (bundleBaseProvider): one copy of the base, and the HTTP thread never runs compute. The
// engine's step loop and the trainer's micro-batches interleave on the worker's event loop; the
// runner's compute share decides how much of the time training may take.
// The HTTP thread has the JobService on the same SQLite database (WAL), which never trains: it
// answers the API (create, list, events, cancel) and wakes the worker's runner when a job is
// queued; cancels travel through the database. Fine-tuned models are registered in the HTTP
// thread's adapter registry, asked for by the worker through a publish RPC.
import type { Context } from "../ffi/tensor.ts";
import type { ModelBundle } from "../model/bundle.ts";
import { Store } from "../store/db.ts";
import { FileStore } from "../store/files.ts";
import { bundleBaseProvider, servedCatalog } from "../jobs/bases.ts";
import type { ModelPublisher } from "../jobs/publisher.ts";
import { JobRunner } from "../jobs/runner.ts";
import { JobService } from "../jobs/service.ts";

export interface TrainingOptions {
  dataDir: string;
  /** Checkpoints are written under `${adapterRoot}/.fine_tuning` (the registry serves them). */
  adapterRoot: string;
  /** Fraction of wall time training may take while serving, in (0, 1]. */
  computeShare: number;
  optimizerBudgetBytes: number;
}

export function dbPath(dataDir: string): string {
  return `${dataDir}/qlora.db`;
}

export function checkpointDir(adapterRoot: string): string {
  return `${adapterRoot.replace(/\/+$/, "")}/.fine_tuning`;
}

/** The worker's runner: trains queued jobs on the served bundle. It starts (recovering
 * interrupted jobs and publishing finished ones) on the first poke, once the HTTP thread is
 * ready to register models. */
export function startWorkerJobs(
  ctx: Context,
  bundle: ModelBundle,
  o: TrainingOptions,
  publisher: ModelPublisher,
  log: ((e: Record<string, unknown>) => void) | null,
): { runner: JobRunner; close(): Promise<void> } {
  const store = new Store(dbPath(o.dataDir));
  const files = new FileStore(store, `${o.dataDir}/files`);
  const runner = new JobRunner({
    store,
    files,
    checkpointDir: checkpointDir(o.adapterRoot),
    bases: bundleBaseProvider(ctx, bundle),
    publisher,
    computeShare: o.computeShare,
    optimizerBudgetBytes: o.optimizerBudgetBytes,
    log,
    autoStart: false,
  });
  return {
    runner,
    async close() {
      await runner.stop();
      store.close();
    },
  };
}

/** The HTTP thread's job service and file store (the API side: it never trains). Jobs may name
 * the served model, in the served quant. */
export function apiJobs(
  o: TrainingOptions,
  model: { id: string; quant: string; maxModelLen: number; hasChatTemplate: boolean },
  wakeWorker: () => void,
): { files: FileStore; jobs: JobService; close(): void } {
  const store = new Store(dbPath(o.dataDir));
  // the HTTP thread's store starts before the server listens: it sweeps what a crash left behind
  const files = new FileStore(store, `${o.dataDir}/files`, { sweepTemp: true });
  const jobs = new JobService({ store, files, bases: servedCatalog(model), onQueued: wakeWorker });
  return { files, jobs, close: () => store.close() };
}
