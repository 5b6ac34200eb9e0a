// worker.ts — the engine worker: loads the native library and the model, runs the Engine's step
// loop and the adapter cache, and streams each request's events back to the HTTP thread.
/// <reference lib="deno.worker" />
import { configPlanModel } from "./memory_plan.ts";
import { Context } from "../ffi/tensor.ts";
import { openModel } from "../model/bundle.ts";
import { type LoadOptions, memoryReport } from "../model/loader.ts";
import { Engine, EngineError } from "../engine/engine.ts";
import { SamplingParamsError } from "../engine/sampling.ts";
import { AdapterCache } from "../adapters/cache.ts";
import { CacheBinder } from "../adapters/binder.ts";
import { PeftError } from "../adapters/peft.ts";
import type { EngineStats, FromWorker, ToWorker, WorkerGenerate, WorkerInit } from "./protocol.ts";
import { startWorkerJobs } from "./training.ts";
import { planKvCache } from "./kv_budget.ts";
import { dtypeSize } from "../ffi/tensor.ts";
import { GrammarCompiler, GrammarError, type GrammarState, grammarVocab } from "../engine/grammar.ts";

let engine: Engine | null = null;
let cache: AdapterCache | null = null;
let eosIds: number[] = [];
/** The model's grammar compiler, made on the first constrained request (TokenizerInfo takes a
 * while on a large vocabulary; servers that never constrain never pay it). */
let grammars: Promise<GrammarCompiler> | null = null;
let grammarSource: (() => Promise<GrammarCompiler>) | null = null;
const grammarCompiler = () => (grammars ??= grammarSource!().catch((e) => {
  grammars = null;
  throw e;
}));
const requests = new Map<number, AbortController>();
let dispose: (() => void) | null = null;
let jobs: Awaited<ReturnType<typeof startWorkerJobs>> | null = null;
const publishes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
let nextPublish = 1;

const post = (m: FromWorker) => self.postMessage(m);

function stats(): EngineStats {
  const a = engine?.adapterUids() ?? { running: [], waiting: [] };
  return {
    running: engine?.numRunning ?? 0,
    waiting: engine?.numWaiting ?? 0,
    runningAdapters: a.running,
    waitingAdapters: a.waiting,
    residentAdapters: cache?.size ?? 0,
    residentUids: cache?.ids() ?? [],
    kvUsage: engine ? engine.blocks.numUsedBlocks / engine.blocks.numBlocks : 0,
    residentBytes: cache?.bytes ?? 0,
    adapterLoads: cache?.loads ?? 0,
    adapterEvictions: cache?.evictions ?? 0,
  };
}

/** Logs loading progress (tensors, MB, MB/s) about once a second; silent for a load under 1 s. */
function progressLogger(dir: string): LoadOptions["onProgress"] {
  let last = performance.now();
  let logged = false;
  return (p) => {
    const now = performance.now();
    if (p.done < p.total && now - last < 1000) return;
    if (p.done === p.total && !logged) return;
    last = now;
    logged = true;
    const mb = p.bytes / 1e6;
    console.log(JSON.stringify({
      ts: new Date().toISOString(),
      level: "info",
      msg: p.done < p.total ? `loading ${dir}: ${p.done}/${p.total} tensors` : `loaded ${dir}: ${p.total} tensors`,
      mb: Math.round(mb),
      mb_per_s: Math.round(mb / Math.max(p.seconds, 1e-3)),
      seconds: Math.round(p.seconds * 10) / 10,
    }));
  };
}

async function init(o: WorkerInit): Promise<void> {
  const ctx = new Context({ threads: o.threads });
  const bundle = await openModel(ctx, o.modelDir, {
    quant: o.quant,
    id: o.modelId,
    activations: o.activations,
    onProgress: progressLogger(o.modelDir),
    quantizedCacheDir: o.quantizedCacheDir,
    onQuantizedCache: (e) => console.log(JSON.stringify({ ts: new Date().toISOString(), level: "info", ...e })),
    // the first start serves while the cache for the next one is written
    quantizedCacheWrite: "background",
  });
  const shape = bundle.loaded.model.shape;
  const maxModelLen = Math.min(bundle.maxModelLen, o.maxModelLen ?? Infinity);
  // the KV cache follows from the budget, resolved now that the weights are resident
  let kv;
  try {
    kv = planKvCache({
      shape,
      dtypeBytes: dtypeSize(bundle.loaded.model.activationDtype),
      maxNumSeqs: o.maxNumSeqs,
      maxModelLen,
      budget: o.kvCacheMemory,
      numBlocks: o.numBlocks,
    });
  } catch (e) {
    bundle.loaded.model.dispose();
    ctx.dispose();
    throw e;
  }
  cache = new AdapterCache(ctx, shape, o.adapterBudgetBytes);
  const binder = new CacheBinder(cache);
  engine = new Engine(bundle.loaded.model, bundle.tokenizer, {
    maxModelLen,
    maxNumSeqs: o.maxNumSeqs,
    maxBatchedTokens: o.maxBatchedTokens,
    numBlocks: kv.numBlocks,
    blockSize: kv.blockSize,
    onStep: (step) => post({ t: "step", step, stats: stats() }),
  }, binder);
  eosIds = bundle.eosTokenIds;
  grammarSource = () => GrammarCompiler.create(grammarVocab(bundle.tokenizer, shape.vocab, eosIds));
  if (o.training) {
    // the job runner trains on this very model, between the engine's steps
    const publisher = {
      publish: (tenant: string, id: string, dir: string) =>
        new Promise<void>((resolve, reject) => {
          const rpc = nextPublish++;
          publishes.set(rpc, { resolve, reject });
          post({ t: "publish", rpc, tenant, id, dir });
        }),
    };
    jobs = startWorkerJobs(ctx, bundle, o.training, publisher, (entry) => post({ t: "log", entry }));
  }
  const kvBytes = engine.runner.cache.bytes;
  dispose = () => {
    engine?.dispose();
    cache?.dispose();
    binder.dispose();
    bundle.loaded.model.dispose();
    ctx.dispose();
  };
  post({
    t: "ready",
    info: {
      id: bundle.id,
      backend: ctx.backend,
      backendInfo: ctx.describe(),
      shape,
      maxModelLen,
      quant: bundle.loaded.quant,
      memory: memoryReport(bundle.loaded.model, kvBytes, { budgetBytes: kv.budgetBytes, blocks: kv.numBlocks, blockSize: kv.blockSize }),
      planModel: configPlanModel(bundle.loaded.config),
      kv,
      maxNumSeqs: o.maxNumSeqs,
      eosTokenIds: eosIds,
    },
  });
}

function errorCode(e: unknown): string {
  if (e instanceof EngineError) return e.code;
  if (e instanceof SamplingParamsError) return "invalid_request";
  if (e instanceof PeftError) return "invalid_adapter";
  if (e instanceof GrammarError) return "invalid_grammar";
  if (e instanceof Deno.errors.NotFound) return "adapter_not_found";
  return "internal";
}

async function generate(id: number, req: WorkerGenerate): Promise<void> {
  const ac = new AbortController();
  requests.set(id, ac);
  let pinned: { uid: string; entry: ReturnType<AdapterCache["get"]> } | null = null;
  let grammar: GrammarState | null = null;
  try {
    if (!engine || !cache) throw new EngineError("the engine is not ready", "engine_stopped");
    if (req.adapter) {
      const entry = await cache.acquire(req.adapter.uid, req.adapter.dir);
      pinned = { uid: req.adapter.uid, entry };
    }
    const stopTokenIds = [...new Set([...eosIds, ...(req.stopping.stopTokenIds ?? [])])];
    if (req.grammar) {
      // compiled here, not on the HTTP thread; a cached grammar costs a lookup
      // (cancelled meanwhile: the engine still answers it, with an abort finish)
      grammar = await (await grammarCompiler()).matcher(req.grammar.spec, req.grammar.param, stopTokenIds);
    }
    const it = engine.generate({
      promptIds: req.promptIds,
      sampling: req.sampling,
      stopping: { ...req.stopping, stopTokenIds },
      adapterUid: req.adapter?.uid ?? null,
      promptLogprobs: req.promptLogprobs ?? null,
      tenant: req.tenant,
      tenantWeight: req.tenantWeight,
      signal: ac.signal,
      includeStopString: req.includeStopString,
      skipSpecialTokens: req.skipSpecialTokens,
      grammar,
    });
    for await (const ev of it) post({ t: "event", id, ev });
  } catch (e) {
    post({ t: "fail", id, message: (e as Error).message, code: errorCode(e), param: e instanceof GrammarError ? e.param : null });
  } finally {
    grammar?.dispose();
    requests.delete(id);
    if (pinned && cache) cache.release(pinned.uid, pinned.entry);
  }
}

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  switch (m.t) {
    case "init":
      try {
        await init(m.init);
      } catch (err) {
        post({ t: "init_error", message: (err as Error).message });
      }
      return;
    case "generate":
      void generate(m.id, m.req);
      return;
    case "cancel":
      requests.get(m.id)?.abort();
      post({ t: "stats", stats: stats() });
      return;
    case "adapter_load":
      try {
        if (!cache) throw new Error("the engine is not ready");
        const entry = await cache.acquire(m.uid, m.dir);
        cache.release(m.uid, entry);
        post({ t: "rpc", rpc: m.rpc, ok: true, result: { bytes: entry.bytes, stats: stats() } });
      } catch (err) {
        post({ t: "rpc", rpc: m.rpc, ok: false, message: (err as Error).message, code: errorCode(err) });
      }
      return;
    case "grammar_compile":
      try {
        const c = await grammarCompiler();
        const t0 = performance.now();
        await c.compile(m.spec, null);
        post({ t: "rpc", rpc: m.rpc, ok: true, result: { ms: performance.now() - t0 } });
      } catch (err) {
        post({ t: "rpc", rpc: m.rpc, ok: false, message: (err as Error).message, code: errorCode(err) });
      }
      return;
    case "grammar_stats":
      post({ t: "rpc", rpc: m.rpc, ok: true, result: { ms: engine?.grammarMaskMs ?? 0, masks: engine?.grammarMasks ?? 0 } });
      return;
    case "adapter_unload":
      post({ t: "rpc", rpc: m.rpc, ok: true, result: { unloaded: cache?.unload(m.uid) ?? false, stats: stats() } });
      return;
    case "jobs_poke":
      if (jobs) {
        await jobs.runner.start(); // the first poke starts the runner (no-op afterwards)
        jobs.runner.poke();
      }
      return;
    case "publish_done": {
      const p = publishes.get(m.rpc);
      publishes.delete(m.rpc);
      if (p) m.ok ? p.resolve() : p.reject(new Error(m.message ?? "publish failed"));
      return;
    }
    case "shutdown":
      try {
        await jobs?.close();
        jobs = null;
        await engine?.stop();
        dispose?.();
        dispose = null;
      } finally {
        post({ t: "rpc", rpc: m.rpc, ok: true });
      }
      return;
  }
};
