// streaming.ts — server-sent events → an async-iterable, abortable Stream of typed chunks.
//
//   const stream = await client.chat.completions.create({ model, messages, stream: true });
//   for await (const chunk of stream) process(chunk.choices[0]?.delta.content ?? "");
//   stream.abort();            // or stream.controller.abort(), or the call's `signal`
//
// The parser follows the SSE rules (fields data/event/id, multi-line data, comments, CR/LF/CRLF
// line ends, chunk boundaries anywhere, even inside a UTF-8 character). `data: [DONE]` ends the
// stream; an `{"error": …}` payload mid-stream throws an APIError carrying the request id. Aborting
// (abort(), the signal, or leaving a `for await` early) cancels the HTTP request, so the server
// stops generating; the loop then ends quietly.
import { APIError } from "./errors.ts";

export interface ServerSentEvent {
  event: string | null;
  data: string;
  id: string | null;
}

/** Splits a byte stream into SSE events. */
export class SSEDecoder {
  #text = new TextDecoder();
  #buf = "";
  #data: string[] = [];
  #event: string | null = null;
  #id: string | null = null;
  #sawCR = false;

  /** Feeds bytes; returns the events completed by them. */
  decode(chunk: Uint8Array): ServerSentEvent[] {
    return this.#lines(this.#text.decode(chunk, { stream: true }));
  }

  /** Ends the input; returns a last event not followed by a blank line. */
  flush(): ServerSentEvent[] {
    const out = this.#lines(this.#text.decode() + "\n");
    const last = this.#dispatch();
    return last ? [...out, last] : out;
  }

  #lines(text: string): ServerSentEvent[] {
    const out: ServerSentEvent[] = [];
    let s = this.#buf + text;
    if (this.#sawCR && s.startsWith("\n")) s = s.slice(1); // the LF of a CRLF split across chunks
    this.#sawCR = false;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = s.slice(start, i);
      if (c === 13) {
        if (i + 1 < s.length) {
          if (s.charCodeAt(i + 1) === 10) i++;
        } else this.#sawCR = true;
      }
      start = i + 1;
      const ev = this.#line(line);
      if (ev) out.push(ev);
    }
    this.#buf = s.slice(start);
    return out;
  }

  #line(line: string): ServerSentEvent | null {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id") this.#id = value;
    return null;
  }

  #dispatch(): ServerSentEvent | null {
    if (this.#data.length === 0 && this.#event === null) return null;
    const ev = {
      event: this.#event,
      data: this.#data.join("\n"),
      id: this.#id,
    };
    this.#data = [];
    this.#event = null;
    return ev;
  }
}

/** The raw events of a response body. */
export async function* iterSSE(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<ServerSentEvent> {
  const decoder = new SSEDecoder();
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* decoder.decode(value);
    }
    yield* decoder.flush();
  } finally {
    reader.releaseLock();
  }
}

const isAbort = (e: unknown) =>
  (e as { name?: string } | null)?.name === "AbortError" ||
  (e as { name?: string } | null)?.name === "APIUserAbortError";

export class Stream<Item> implements AsyncIterable<Item> {
  #iterated = false;

  constructor(
    private readonly iterator: () => AsyncIterator<Item>,
    /** Aborting it cancels the HTTP request. */
    readonly controller: AbortController,
    /** The HTTP response the stream reads (undefined for streams made with fromIterable). */
    readonly response?: Response,
  ) {}

  /** The x-request-id of the response. */
  get requestId(): string | null {
    return this.response?.headers.get("x-request-id") ?? null;
  }

  /** Chunks parsed from a text/event-stream response; `onEnd` runs once when it is over. */
  static fromSSEResponse<Item>(
    response: Response,
    controller: AbortController,
    onEnd: () => void = () => {},
  ): Stream<Item> {
    async function* iterate(): AsyncGenerator<Item> {
      if (!response.body) {
        onEnd();
        throw new APIError(
          undefined,
          undefined,
          "the streaming response has no body",
          response.headers,
        );
      }
      let done = false;
      try {
        for await (const sse of iterSSE(response.body)) {
          if (controller.signal.aborted) return; // events already read in the same chunk are dropped too
          if (done) continue;
          if (sse.data.startsWith("[DONE]")) {
            done = true;
            continue;
          }
          if (sse.data === "") continue;
          let data: unknown;
          try {
            data = JSON.parse(sse.data);
          } catch {
            throw new APIError(
              undefined,
              sse.data,
              `could not parse a stream event: ${sse.data.slice(0, 200)}`,
              response.headers,
            );
          }
          if (
            sse.event === "error" ||
            (data && typeof data === "object" && "error" in data &&
              !("choices" in data))
          ) {
            throw new APIError(undefined, data, undefined, response.headers);
          }
          yield data as Item;
        }
        done = true;
      } catch (e) {
        if (controller.signal.aborted && isAbort(e)) return;
        if (controller.signal.aborted) return;
        throw e;
      } finally {
        // Leaving early (break, abort, error) cancels the request so the server stops generating.
        if (!done) controller.abort();
        onEnd();
      }
    }
    return new Stream(() => iterate(), controller, response);
  }

  /** A Stream over any async iterable (for tests and adapters). */
  static fromIterable<Item>(
    items: AsyncIterable<Item>,
    controller: AbortController = new AbortController(),
  ): Stream<Item> {
    return new Stream(() => items[Symbol.asyncIterator](), controller);
  }

  /** Cancels the request; a running `for await` ends quietly. */
  abort(reason?: unknown): void {
    this.controller.abort(reason);
  }

  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  [Symbol.asyncIterator](): AsyncIterator<Item> {
    if (this.#iterated) {
      throw new Error(
        "a Stream can be iterated once; use tee() to read it twice",
      );
    }
    this.#iterated = true;
    return this.iterator();
  }

  /** Two independent streams over the same chunks. */
  tee(): [Stream<Item>, Stream<Item>] {
    const queues: IteratorResult<Item>[][] = [[], []];
    let it: AsyncIterator<Item> | null = null;
    let pending: Promise<void> | null = null;
    let error: unknown = undefined;
    const pull = () => {
      it ??= this[Symbol.asyncIterator]();
      pending ??= it.next().then((r) => {
        queues[0].push(r);
        queues[1].push(r);
      }, (e) => {
        error = e ?? new Error("stream failed");
      }).finally(() => (pending = null));
      return pending;
    };
    const side = (q: IteratorResult<Item>[]): AsyncIterator<Item> => ({
      next: async () => {
        while (q.length === 0) {
          if (error !== undefined) throw error;
          await pull();
        }
        return q.shift()!;
      },
    });
    return [
      new Stream(() => side(queues[0]), this.controller, this.response),
      new Stream(() => side(queues[1]), this.controller, this.response),
    ];
  }

  /** Newline-delimited JSON of the chunks (e.g. to hand a stream from a server to a browser). */
  toReadableStream(): ReadableStream<Uint8Array> {
    const enc = new TextEncoder();
    let it: AsyncIterator<Item>;
    return new ReadableStream({
      start: () => {
        it = this[Symbol.asyncIterator]();
      },
      pull: async (ctrl) => {
        try {
          const { value, done } = await it.next();
          if (done) return ctrl.close();
          ctrl.enqueue(enc.encode(JSON.stringify(value) + "\n"));
        } catch (e) {
          ctrl.error(e);
        }
      },
      cancel: async () => {
        await it.return?.();
      },
    });
  }

  /** Collects every chunk (the stream runs to its end). */
  async toArray(): Promise<Item[]> {
    const out: Item[] = [];
    for await (const x of this) out.push(x);
    return out;
  }
}
