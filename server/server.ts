// server.ts — wires one server together (engine worker, tokenizer, adapter registry, keys,
// metrics, the Hono app). main.ts calls it with the command-line flags; tests and the bench call
// it directly.
import { resolve } from "node:path";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { Tokenizer } from "./model/tokenizer.ts";
import { AdapterRegistry } from "./adapters/registry.ts";
import { type KeySpec, KeyStore } from "./api/auth.ts";
import { Metrics } from "./api/metrics.ts";
import { createApp } from "./api/app.ts";
import { TenantAdmission } from "./api/admission.ts";
import type { AppDeps, AppEnv } from "./api/deps.ts";
import { EngineHost } from "./serving/host.ts";
import { TokenizerPool } from "./serving/tokenizer_pool.ts";
import type { WorkerInit } from "./serving/protocol.ts";
import { apiJobs, type TrainingOptions } from "./serving/training.ts";
import { registryPublisher } from "./jobs/publisher.ts";

export interface ServerOptions {
  modelDir: string;
  modelId?: string;
  quant?: WorkerInit["quant"];
  /** Activations and KV cache (default: bf16 on a 4-bit base, f32 with quant "none"). */
  activations?: WorkerInit["activations"];
  /** Folder adapters are registered from (created if missing). */
  adapterRoot: string;
  /** Folder for server state (uploaded adapters). */
  dataDir: string;
  threads?: number;
  maxNumSeqs?: number;
  /** Tokens computed in one engine step: decodes plus prompt chunks (default: the engine's). */
  maxBatchedTokens?: number;
  maxQueue?: number;
  maxModelLen?: number;
  /** KV cache blocks: an explicit override (tests); otherwise they follow from the KV budget. */
  numBlocks?: number;
  /** KV cache budget in bytes (default: min(25% of MemAvailable after loading, 4 GiB); see serving/kv_budget.ts). */
  kvCacheBytes?: number;
  /** KV cache budget as a fraction of MemAvailable after loading, in (0, 1] (instead of kvCacheBytes). */
  kvCacheFraction?: number;
  /** Cache the quantized base under <dataDir>/quantized (default false here; the CLI turns it on). */
  quantizedCache?: boolean;
  /** Device bytes for resident adapters (default 1 GiB). */
  adapterBudgetBytes?: number;
  /** Generation requests a tenant may have running or waiting at once, unless its key says
   * (default: half of maxNumSeqs + maxQueue). */
  tenantMaxRequests?: number;
  /** Largest JSON request body (default 4 MiB: a chat of ~a million characters). */
  bodyLimitBytes?: number;
  /** Largest upload (default 64 MiB). */
  uploadLimitBytes?: number;
  /** Keys: a JSON file and/or explicit specs; the environment is read unless env is false. */
  keysFile?: string;
  keys?: KeySpec[];
  env?: boolean;
  chatTemplate?: string | null;
  /** Workers that tokenize prompts off the HTTP thread (default 2). */
  tokenizerWorkers?: number;
  log?: AppDeps["log"];
  /** Fine-tuning jobs on the served base (default true). */
  training?: boolean;
  /** Fraction of wall time a running job may take from serving, in (0, 1] (default 0.5). */
  trainComputeShare?: number;
  /** Bytes of optimizer state the paged optimizers keep resident (default 256 MiB). */
  optimizerBudgetBytes?: number;
}

export interface Server {
  app: OpenAPIHono<AppEnv>;
  deps: AppDeps;
  close(): Promise<void>;
}

export async function createServer(o: ServerOptions): Promise<Server> {
  // absolute once, here: the registry accepts adapters only under its root, and job checkpoints
  // (written under the data folder) must be recognised there whatever the working directory
  const dataDir = resolve(o.dataDir), adapterRoot = resolve(o.adapterRoot);
  const modelId = o.modelId ?? o.modelDir.replace(/\/+$/, "").split("/").pop()!;
  const tokenizer = await Tokenizer.load(o.modelDir);
  const keys = await KeyStore.load(o.keysFile, o.env === false ? () => undefined : undefined, o.keys ?? []);
  const maxNumSeqs = o.maxNumSeqs ?? 64;
  const training: TrainingOptions | undefined = o.training === false ? undefined : {
    dataDir: dataDir,
    adapterRoot: adapterRoot,
    computeShare: o.trainComputeShare ?? 0.5,
    optimizerBudgetBytes: o.optimizerBudgetBytes ?? 256 << 20,
  };
  if (training) await Deno.mkdir(dataDir, { recursive: true });
  const host = await EngineHost.start({
    training,
    modelDir: o.modelDir,
    modelId,
    quant: o.quant ?? "nf4",
    activations: o.activations,
    threads: o.threads ?? 0,
    maxNumSeqs,
    maxBatchedTokens: o.maxBatchedTokens,
    maxModelLen: o.maxModelLen,
    numBlocks: o.numBlocks,
    kvCacheMemory: o.kvCacheBytes !== undefined
      ? { bytes: o.kvCacheBytes }
      : o.kvCacheFraction !== undefined
      ? { fraction: o.kvCacheFraction }
      : undefined,
    quantizedCacheDir: o.quantizedCache ? `${dataDir}/quantized` : undefined,
    adapterBudgetBytes: o.adapterBudgetBytes ?? 1 << 30,
  });
  const registry = new AdapterRegistry(
    adapterRoot,
    `${dataDir}/uploads`,
    host.info.shape,
    [host.info.id],
    `${dataDir}/adapters.json`,
  );
  const log = o.log === undefined ? (e: Record<string, unknown>) => console.log(JSON.stringify(e)) : o.log;
  try {
    const r = await registry.restore();
    if (r.restored || r.skipped.length) {
      log?.({ ts: new Date().toISOString(), level: "info", msg: "adapters restored", restored: r.restored, skipped: r.skipped });
    }
  } catch (e) {
    await host.close();
    throw e;
  }
  let tokenizers: TokenizerPool;
  try {
    tokenizers = await TokenizerPool.start(o.modelDir, o.tokenizerWorkers ?? 2);
  } catch (e) {
    await host.close();
    throw e;
  }
  const names = (uids: string[]) => uids.map((u) => registry.byUid(u)?.id ?? u);
  const metrics = new Metrics(() => {
    const s = host.stats;
    return {
      running: s.running,
      waiting: s.waiting + Math.max(0, host.outstanding - s.running - s.waiting),
      maxLora: maxNumSeqs,
      runningAdapters: names(s.runningAdapters),
      waitingAdapters: names(s.waitingAdapters),
      residentAdapters: s.residentAdapters,
      residentAdapterBytes: s.residentBytes,
      registeredAdapters: registry.list({ tenant: "", admin: true }).length,
      kvCacheUsage: s.kvUsage,
    };
  });
  host.onStep = (step) => {
    metrics.batch.observe(step.sequences);
    metrics.stepTime.observe(step.seconds);
  };
  const deps: AppDeps = {
    host,
    tokenizer,
    tokenizers,
    registry,
    keys,
    metrics,
    created: Math.floor(Date.now() / 1000),
    maxQueue: o.maxQueue ?? 256,
    // half the server's capacity by default: a tenant that floods leaves the other half to the rest
    admission: new TenantAdmission(
      o.tenantMaxRequests ?? Math.max(1, Math.floor((maxNumSeqs + (o.maxQueue ?? 256)) / 2)),
      (t) => keys.limitsOf(t),
    ),
    bodyLimitBytes: o.bodyLimitBytes ?? 4 << 20,
    uploadLimitBytes: o.uploadLimitBytes ?? 64 << 20,
    chatTemplate: o.chatTemplate ?? null,
    log,
  };
  let jobsApi: ReturnType<typeof apiJobs> | null = null;
  if (training) {
    // the HTTP thread's side of fine-tuning: the API on the shared database; the worker trains
    jobsApi = apiJobs(training, { ...host.info, hasChatTemplate: tokenizer.chatTemplate !== null }, () => host.pokeJobs());
    deps.files = jobsApi.files;
    deps.files.validate = (tenant, text, max) => tokenizers.validateJsonl(tenant, text, max);
    deps.jobs = jobsApi.jobs;
    host.onPublish = registryPublisher(registry).publish;
    host.onLog = (entry) => log?.(entry);
    host.pokeJobs(); // starts the worker's runner: interrupted jobs resume
  }
  const app = createApp(deps);
  return {
    app,
    deps,
    close: async () => {
      await host.close();
      tokenizers.close();
      jobsApi?.close();
    },
  };
}
