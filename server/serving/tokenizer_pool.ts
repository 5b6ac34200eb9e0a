// tokenizer_pool.ts — prompt tokenization off the HTTP thread. The model's tokenizer encodes a
// few microseconds per character here (stories260K: ~1.9 s for 300,000 characters of prose on
// these 2 cores), so a big prompt tokenized inline would hold the HTTP thread — every tenant's
// requests, /health included — for seconds. Workers (tokenizer_worker.ts, each with its own copy
// of the tokenizer) do it instead. Work queues per tenant and the next free worker takes the oldest
// job of the next tenant in round-robin order, so one tenant's big prompts wait behind each other,
// not in front of another tenant's (uploaded fine-tuning files are validated here too: parsing 30 MB
// of JSONL took 1.4 s inline); and one tenant keeps at most workers − 1 of them busy (one
// when there is one), so with two or more workers another tenant's prompt never waits for a
// flood to be tokenized. A job whose request went away (its signal aborted) while it waited is
// dropped unrun.
import { ChatTemplateError } from "../model/chat_template.ts";
import { DatasetError } from "../training/dataset.ts";
import type { JsonlSummary, TokenizeJob, TokenizeReply } from "./tokenizer_worker.ts";

export type { JsonlSummary, TokenizeJob } from "./tokenizer_worker.ts";

interface Pending {
  job: TokenizeJob;
  resolve: (result: unknown) => void;
  reject: (e: Error) => void;
  signal?: AbortSignal;
}

interface Slot {
  worker: Worker;
  busy: Pending | null;
  tenant: string | null;
}

export class TokenizerPool {
  readonly #slots: Slot[] = [];
  /** tenant → its waiting jobs (oldest first); Map order is the round-robin order. */
  readonly #queues = new Map<string, Pending[]>();
  #closed = false;

  private constructor() {}

  /** Starts `workers` workers that each load the tokenizer of `modelDir`. */
  static async start(modelDir: string, workers: number): Promise<TokenizerPool> {
    const pool = new TokenizerPool();
    try {
      await Promise.all(Array.from({ length: Math.max(1, workers) }, () => pool.#spawn(modelDir)));
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  async #spawn(modelDir: string): Promise<void> {
    const worker = new Worker(new URL("./tokenizer_worker.ts", import.meta.url).href, { type: "module" });
    const slot: Slot = { worker, busy: null, tenant: null };
    this.#slots.push(slot);
    await new Promise<void>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<TokenizeReply>) => {
        if (e.data.t === "ready") resolve();
        else if (e.data.t === "init_error") reject(new Error(`tokenizer worker failed to start: ${e.data.message}`));
      };
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`tokenizer worker failed: ${e.message}`));
      };
      worker.postMessage({ t: "init", modelDir });
    });
    worker.onmessage = (e: MessageEvent<TokenizeReply>) => this.#onReply(slot, e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      const p = slot.busy;
      slot.busy = slot.tenant = null;
      p?.reject(new Error(`tokenizer worker failed: ${e.message}`));
    };
  }

  /** Tokenizes `job` for `tenant` (ids, or a ChatTemplateError / Error). */
  run(tenant: string, job: Exclude<TokenizeJob, { t: "jsonl" }>, signal?: AbortSignal): Promise<number[]> {
    return this.#submit(tenant, job, signal) as Promise<number[]>;
  }

  /** Validates a fine-tuning file's text (or rejects with the parser's DatasetError). */
  validateJsonl(tenant: string, text: string, maxExamples: number): Promise<JsonlSummary> {
    return this.#submit(tenant, { t: "jsonl", text, maxExamples }) as Promise<JsonlSummary>;
  }

  #submit(tenant: string, job: TokenizeJob, signal?: AbortSignal): Promise<unknown> {
    if (this.#closed) return Promise.reject(new Error("the tokenizer pool is closed"));
    return new Promise<unknown>((resolve, reject) => {
      const p: Pending = { job, resolve, reject, signal };
      let q = this.#queues.get(tenant);
      if (!q) this.#queues.set(tenant, q = []);
      q.push(p);
      this.#dispatch();
    });
  }

  /** Tokens of text. */
  encode(tenant: string, text: string, addSpecialTokens: boolean, signal?: AbortSignal): Promise<number[]> {
    return this.run(tenant, { t: "encode", text, addSpecialTokens }, signal);
  }

  /** The next job to run and its tenant (round robin over tenants below their worker cap). */
  #next(): [Pending, string] | null {
    const cap = Math.max(1, this.#slots.length - 1);
    for (const [tenant, q] of this.#queues) {
      if (this.#slots.filter((s) => s.tenant === tenant).length >= cap) continue;
      this.#queues.delete(tenant);
      let p: Pending | undefined;
      while ((p = q.shift()) && p.signal?.aborted) p.reject(new DOMException("the request was aborted", "AbortError"));
      if (q.length) this.#queues.set(tenant, q); // to the back of the round-robin order
      if (p) return [p, tenant];
    }
    return null;
  }

  #dispatch(): void {
    for (const slot of this.#slots) {
      if (slot.busy) continue;
      const next = this.#next();
      if (!next) return;
      [slot.busy, slot.tenant] = next;
      slot.worker.postMessage(slot.busy.job);
    }
  }

  #onReply(slot: Slot, m: TokenizeReply): void {
    const p = slot.busy;
    slot.busy = slot.tenant = null;
    if (p) {
      if (m.t === "ids") p.resolve(m.ids);
      else if (m.t === "jsonl") p.resolve(m.summary);
      else if (m.t === "error") {
        p.reject(
          m.kind === "chat_template"
            ? new ChatTemplateError(m.message)
            : m.kind === "dataset"
            ? new DatasetError(m.message)
            : new Error(m.message),
        );
      }
    }
    this.#dispatch();
  }

  /** Jobs waiting (all tenants) and workers busy. */
  get load(): { waiting: number; busy: number; workers: number } {
    let waiting = 0;
    for (const q of this.#queues.values()) waiting += q.length;
    return { waiting, busy: this.#slots.filter((s) => s.busy).length, workers: this.#slots.length };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const gone = new Error("the tokenizer pool is closed");
    for (const q of this.#queues.values()) for (const p of q) p.reject(gone);
    this.#queues.clear();
    for (const s of this.#slots) {
      s.busy?.reject(gone);
      s.worker.terminate();
    }
  }
}
