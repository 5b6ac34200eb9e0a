// host.ts — the HTTP thread's handle on the engine worker. Why a worker: a decode step of a
// 135M model is milliseconds to tens of milliseconds of synchronous native compute; in a Worker it
// runs on its own thread and event loop, so the HTTP thread never waits on it (GET /health and
// /metrics stay fast under load, disconnects are noticed at once). Nonblocking FFI calls would
// need every op to be async and would still serialize the step's JS on the main loop.
//
// Protocol (protocol.ts): init → ready | init_error; generate(id) → event* (a token stream ending
// in a finish event) | fail; cancel(id); adapter_load / adapter_unload / shutdown are RPCs answered
// by rpc messages; the worker posts a step message (StepInfo + EngineStats) after each step.
import type { GenerateEvent, StepInfo } from "../engine/engine.ts";
import type { GrammarSpec } from "../engine/grammar.ts";
import type { EngineStats, FromWorker, ModelInfo, ToWorker, WorkerGenerate, WorkerInit } from "./protocol.ts";
import { ClientError } from "../util/errors.ts";
import { EventQueue } from "../util/event_queue.ts";

/** A failure the worker reported, as the caller's error: the worker's codes for mistakes in the
 * request (or an engine that is shutting down) become ClientErrors; anything else is a fault. */
function workerError(message: string, code: string, param?: string | null): Error {
  switch (code) {
    case "invalid_grammar":
      return new ClientError(400, message, "invalid_value", param ?? null);
    case "context_length_exceeded":
    case "invalid_request":
      return new ClientError(400, message, code);
    case "invalid_adapter":
      return new ClientError(400, `the adapter could not be loaded: ${message}`, "invalid_adapter", "model");
    case "adapter_not_found":
      return new ClientError(404, `the adapter's files are gone: ${message}`, "model_not_found", "model");
    case "engine_stopped":
      return new ClientError(503, message, "engine_stopped");
  }
  return new Error(`generation failed: ${message}`);
}

const shuttingDown = () => workerError("the server is shutting down", "engine_stopped");

interface Stream {
  events: EventQueue<GenerateEvent>;
  done: boolean;
}

export class EngineHost {
  readonly #worker: Worker;
  readonly #streams = new Map<number, Stream>();
  readonly #rpcs = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #closed = false;
  info!: ModelInfo;
  stats: EngineStats = {
    running: 0,
    waiting: 0,
    runningAdapters: [],
    waitingAdapters: [],
    residentAdapters: 0,
    residentUids: [],
    kvUsage: 0,
    residentBytes: 0,
    adapterLoads: 0,
    adapterEvictions: 0,
  };
  /** Requests sent to the worker and not yet finished. */
  outstanding = 0;
  onStep: ((step: StepInfo, stats: EngineStats) => void) | null = null;
  /** Registers a fine-tuned model the worker's job runner produced (the adapter registry). */
  onPublish: ((tenant: string, id: string, dir: string) => Promise<void>) | null = null;
  /** Log entries from the worker. */
  onLog: ((entry: Record<string, unknown>) => void) | null = null;

  private constructor() {
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
  }

  static async start(init: WorkerInit): Promise<EngineHost> {
    const host = new EngineHost();
    const w = host.#worker;
    host.info = await new Promise<ModelInfo>((resolve, reject) => {
      w.onmessage = (e: MessageEvent<FromWorker>) => {
        if (e.data.t === "ready") resolve(e.data.info);
        else if (e.data.t === "init_error") reject(new Error(`engine worker failed to start: ${e.data.message}`));
      };
      w.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`engine worker failed: ${e.message}`));
      };
      w.postMessage({ t: "init", init } satisfies ToWorker);
    }).catch((e) => {
      w.terminate();
      throw e;
    });
    w.onmessage = (e: MessageEvent<FromWorker>) => host.#onMessage(e.data);
    w.onerror = (e) => {
      e.preventDefault();
      console.error(JSON.stringify({ level: "error", msg: "engine worker error", error: e.message }));
    };
    return host;
  }

  #onMessage(m: FromWorker): void {
    switch (m.t) {
      case "event": {
        const s = this.#streams.get(m.id);
        if (!s) return;
        s.events.push(m.ev);
        if (m.ev.type === "finish") {
          this.#end(m.id, s);
          s.events.end();
        }
        return;
      }
      case "fail": {
        const s = this.#streams.get(m.id);
        if (!s) return;
        this.#end(m.id, s);
        s.events.fail(workerError(m.message, m.code, m.param));
        return;
      }
      case "step":
        this.stats = m.stats;
        this.onStep?.(m.step, m.stats);
        return;
      case "stats":
        this.stats = m.stats;
        return;
      case "publish": {
        const reply = (ok: boolean, message?: string) => {
          if (!this.#closed) this.#worker.postMessage({ t: "publish_done", rpc: m.rpc, ok, message } satisfies ToWorker);
        };
        if (!this.onPublish) reply(false, "this server cannot register models");
        else this.onPublish(m.tenant, m.id, m.dir).then(() => reply(true), (e) => reply(false, (e as Error).message));
        return;
      }
      case "log":
        this.onLog?.(m.entry);
        return;
      case "rpc": {
        const r = this.#rpcs.get(m.rpc);
        if (!r) return;
        this.#rpcs.delete(m.rpc);
        if (m.ok) r.resolve(m.result);
        else r.reject(workerError(m.message ?? "failed", m.code ?? "internal"));
        return;
      }
    }
  }

  #end(id: number, s: Stream): void {
    if (s.done) return;
    s.done = true;
    this.#streams.delete(id);
    this.outstanding--;
  }

  #rpc<T>(msg: ToWorker): Promise<T> {
    if (this.#closed) return Promise.reject(shuttingDown());
    return new Promise<T>((resolve, reject) => {
      this.#rpcs.set((msg as { rpc: number }).rpc, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage(msg);
    });
  }

  /** Starts a request. Events arrive through the iterator; a worker failure is thrown from it
   * (a ClientError when the request was at fault). Aborting `signal` (or leaving the loop early)
   * cancels the sequence. */
  generate(req: WorkerGenerate, signal?: AbortSignal): AsyncIterableIterator<GenerateEvent> {
    if (this.#closed) throw shuttingDown();
    const id = this.#nextId++;
    const s: Stream = { events: new EventQueue(), done: false };
    this.#streams.set(id, s);
    this.outstanding++;
    this.#worker.postMessage({ t: "generate", id, req } satisfies ToWorker);
    const cancel = () => {
      if (!s.done) this.#worker.postMessage({ t: "cancel", id } satisfies ToWorker);
    };
    if (signal) {
      if (signal.aborted) cancel();
      else signal.addEventListener("abort", cancel, { once: true });
    }
    async function* iter(): AsyncGenerator<GenerateEvent> {
      let finished = false;
      try {
        for await (const e of s.events.drain()) {
          if (e.type === "finish") finished = true;
          yield e;
          if (finished) return;
        }
      } finally {
        signal?.removeEventListener("abort", cancel);
        if (!finished && !s.done) cancel();
      }
    }
    return iter();
  }

  /** Wakes the worker's job runner (a job was queued by the HTTP thread). */
  pokeJobs(): void {
    if (!this.#closed) this.#worker.postMessage({ t: "jobs_poke" } satisfies ToWorker);
  }

  /** Loads (and checks) an adapter on the device ahead of its first use. */
  loadAdapter(uid: string, dir: string): Promise<{ bytes: number; stats: EngineStats }> {
    return this.#rpc<{ bytes: number; stats: EngineStats }>({ t: "adapter_load", rpc: this.#nextId++, uid, dir }).then((r) => {
      this.stats = r.stats;
      return r;
    });
  }

  /** Compiles a grammar in the worker (benchmarks): the call's milliseconds (a cache hit is a lookup). */
  compileGrammar(spec: GrammarSpec): Promise<{ ms: number }> {
    return this.#rpc<{ ms: number }>({ t: "grammar_compile", rpc: this.#nextId++, spec });
  }

  /** The engine worker's next-token mask work so far: milliseconds and masks (benchmarks). */
  grammarStats(): Promise<{ ms: number; masks: number }> {
    return this.#rpc<{ ms: number; masks: number }>({ t: "grammar_stats", rpc: this.#nextId++ });
  }

  /** Drops an adapter from the device (running requests keep it until they finish). */
  async unloadAdapter(uid: string): Promise<void> {
    const r = await this.#rpc<{ stats: EngineStats }>({ t: "adapter_unload", rpc: this.#nextId++, uid });
    this.stats = r.stats;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#rpc({ t: "shutdown", rpc: this.#nextId++ });
    } catch { /* the worker is gone */ }
    this.#closed = true;
    this.#worker.terminate();
    for (const [id, s] of this.#streams) {
      this.#end(id, s);
      s.events.fail(shuttingDown());
    }
  }
}
