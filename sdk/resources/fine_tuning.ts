// fine_tuning.ts — client.fineTuning.jobs: QLoRA fine-tuning jobs in OpenAI's shape (create, list,
// retrieve, cancel, pause, resume, events, checkpoints) and wait(), which follows a job's events until it ends.
// A succeeded job's `fine_tuned_model` is servable at once: pass it as a request's `model`.
import { type APIPromise, type RequestOptions, seg } from "../core.ts";
import { APIUserAbortError } from "../errors.ts";
import { CursorPage, type PagePromise } from "../pagination.ts";
import { APIResource } from "../resource.ts";
import type {
  FineTuningJob,
  FineTuningJobCheckpoint,
  FineTuningJobCheckpointListParams,
  FineTuningJobCreateParams,
  FineTuningJobEvent,
  FineTuningJobEventListParams,
  FineTuningJobListParams,
  FineTuningJobStatus,
} from "../types.ts";

export const TERMINAL_STATUSES: readonly FineTuningJobStatus[] = [
  "succeeded",
  "failed",
  "cancelled",
];

export interface WaitOptions {
  /** Milliseconds between polls (default 1000). */
  pollInterval?: number;
  /** Stops waiting (the job keeps running): wait() rejects with APIUserAbortError. */
  signal?: AbortSignal;
  /** Called once per new event, oldest first. */
  onEvent?: (event: FineTuningJobEvent) => void;
  /** Called whenever the job's status changes. */
  onStatus?: (job: FineTuningJob) => void;
  /** Options for each request wait() makes. */
  requestOptions?: RequestOptions;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(new APIUserAbortError());
    const onAbort = () => {
      clearTimeout(t);
      reject(new APIUserAbortError());
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

export class Jobs extends APIResource {
  /** Starts a job on an uploaded training file. */
  create(
    body: FineTuningJobCreateParams,
    options?: RequestOptions,
  ): APIPromise<FineTuningJob> {
    return this._client.post("/fine_tuning/jobs", { ...options, body });
  }

  retrieve(id: string, options?: RequestOptions): APIPromise<FineTuningJob> {
    return this._client.get(`/fine_tuning/jobs/${seg(id)}`, options);
  }

  /** The caller's jobs, newest first, page by page (`for await` for all). */
  list(
    params: FineTuningJobListParams = {},
    options?: RequestOptions,
  ): PagePromise<CursorPage<FineTuningJob>, FineTuningJob> {
    const { metadata, ...rest } = params;
    const query: Record<string, unknown> = { ...rest };
    for (const [k, v] of Object.entries(metadata ?? {})) {
      query[`metadata[${k}]`] = v;
    }
    return this._client.getAPIList<CursorPage<FineTuningJob>, FineTuningJob>(
      "/fine_tuning/jobs",
      CursorPage,
      query,
      options,
    );
  }

  /** Asks a job to stop; it ends with status "cancelled". */
  cancel(id: string, options?: RequestOptions): APIPromise<FineTuningJob> {
    return this._client.post(`/fine_tuning/jobs/${seg(id)}/cancel`, options);
  }

  /** Pauses a job: a waiting one at once, a running one after a checkpoint at its current step
   * (status "paused"; its checkpoints stay servable). */
  pause(id: string, options?: RequestOptions): APIPromise<FineTuningJob> {
    return this._client.post(`/fine_tuning/jobs/${seg(id)}/pause`, options);
  }

  /** Resumes a paused job from its last checkpoint. */
  resume(id: string, options?: RequestOptions): APIPromise<FineTuningJob> {
    return this._client.post(`/fine_tuning/jobs/${seg(id)}/resume`, options);
  }

  /** A job's events (loss, learning rate, tokens/s, validation loss, status changes), page by page. */
  events(
    id: string,
    params: FineTuningJobEventListParams = {},
    options?: RequestOptions,
  ): PagePromise<CursorPage<FineTuningJobEvent>, FineTuningJobEvent> {
    return this._client.getAPIList<
      CursorPage<FineTuningJobEvent>,
      FineTuningJobEvent
    >(
      `/fine_tuning/jobs/${seg(id)}/events`,
      CursorPage,
      { ...params },
      options,
    );
  }

  /** openai-node's name for events(). */
  listEvents(
    id: string,
    params: FineTuningJobEventListParams = {},
    options?: RequestOptions,
  ): PagePromise<CursorPage<FineTuningJobEvent>, FineTuningJobEvent> {
    return this.events(id, params, options);
  }

  /** A job's checkpoints (step, metrics, the servable checkpoint model id), page by page. */
  checkpoints(
    id: string,
    params: FineTuningJobCheckpointListParams = {},
    options?: RequestOptions,
  ): PagePromise<CursorPage<FineTuningJobCheckpoint>, FineTuningJobCheckpoint> {
    return this._client.getAPIList<
      CursorPage<FineTuningJobCheckpoint>,
      FineTuningJobCheckpoint
    >(
      `/fine_tuning/jobs/${seg(id)}/checkpoints`,
      CursorPage,
      { ...params },
      options,
    );
  }

  /** The same as checkpoints(). */
  listCheckpoints(
    id: string,
    params: FineTuningJobCheckpointListParams = {},
    options?: RequestOptions,
  ): PagePromise<CursorPage<FineTuningJobCheckpoint>, FineTuningJobCheckpoint> {
    return this.checkpoints(id, params, options);
  }

  /**
   * Follows a job until it succeeds, fails or is cancelled, reporting each new event (oldest first)
   * to `onEvent`, and returns the finished job (check `status`; a failed job has `error`).
   */
  async wait(id: string, options: WaitOptions = {}): Promise<FineTuningJob> {
    const it = this.#follow(id, options, options.onEvent !== undefined);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      options.onEvent?.(r.value);
    }
  }

  /**
   * The job's events as they happen (oldest first, each once), until the job ends; the generator's
   * return value is the finished job.
   *
   *   for await (const e of client.fineTuning.jobs.follow(job.id)) console.log(e.message);
   */
  follow(id: string, options: Omit<WaitOptions, "onEvent"> = {}): AsyncGenerator<FineTuningJobEvent, FineTuningJob> {
    return this.#follow(id, options, true);
  }

  async *#follow(id: string, options: Omit<WaitOptions, "onEvent">, events: boolean): AsyncGenerator<FineTuningJobEvent, FineTuningJob> {
    const interval = options.pollInterval ?? 1000;
    const ro: RequestOptions = { ...options.requestOptions, signal: options.signal ?? options.requestOptions?.signal };
    const seen = new Set<string>();
    let lastStatus: string | null = null;
    for (;;) {
      const job = await this.retrieve(id, ro);
      if (job.status !== lastStatus) {
        lastStatus = job.status;
        options.onStatus?.(job);
      }
      if (events) yield* await this.#newEvents(id, seen, ro);
      if (TERMINAL_STATUSES.includes(job.status)) return job;
      await sleep(interval, options.signal);
    }
  }

  /**
   * Events not seen yet, oldest first. The server lists events newest first (as OpenAI does), so
   * pages are read from the newest until one reaches an event already seen.
   */
  async #newEvents(id: string, seen: Set<string>, ro: RequestOptions): Promise<FineTuningJobEvent[]> {
    const fresh: FineTuningJobEvent[] = [];
    for await (const page of (await this.events(id, { limit: 100 }, ro)).iterPages()) {
      let reachedSeen = false;
      for (const e of page.data) {
        if (seen.has(e.id)) {
          reachedSeen = true;
          break;
        }
        fresh.push(e);
      }
      if (reachedSeen) break;
    }
    fresh.reverse();
    for (const e of fresh) seen.add(e.id);
    return fresh;
  }
}

export class FineTuning extends APIResource {
  readonly jobs: Jobs = new Jobs(this._client);
}
