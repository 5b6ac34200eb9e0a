// client_test.ts — the SDK's machinery against a stub server on 127.0.0.1 (no engine): retries with
// backoff for 429/5xx/connection errors honouring retry-after, no retry for other 4xx, timeouts,
// aborts, headers, cursor paging, jobs.wait() following events, the SSE parser, and mid-stream
// errors.
import assert from "node:assert/strict";
import {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  backoffMs,
  BadRequestError,
  InternalServerError,
  QloraClient,
  RateLimitError,
  retryAfterMs,
  SSEDecoder,
  Stream,
  UnprocessableEntityError,
} from "../../sdk/mod.ts";
import { errorBody, jsonResponse, stubServer } from "./helpers.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };
const model = { id: "m", object: "model", created: 0, owned_by: "x" };

Deno.test({
  ...opts,
  name: "retries 429 and 5xx with backoff, honouring retry-after-ms and retry-after; the request id comes from the last answer",
  fn: async () => {
    await using stub = stubServer((_req, n) => {
      if (n === 1) return jsonResponse(errorBody("slow down", "rate_limit_error"), 429, { "retry-after-ms": "150", "x-request-id": "r1" });
      if (n === 2) return jsonResponse(errorBody("oops", "server_error"), 503, { "retry-after": "0", "x-request-id": "r2" });
      return jsonResponse({ object: "list", data: [model] }, 200, { "x-request-id": "r3" });
    });
    const client = new QloraClient({ baseURL: stub.baseURL, apiKey: "sk-1", maxRetries: 3 });
    const page = await client.models.list();
    assert.equal(page.data[0].id, "m");
    assert.equal(page.requestId, "r3");
    assert.equal(stub.requests.length, 3);
    assert.ok(stub.requests[1].at - stub.requests[0].at >= 140, "waited retry-after-ms");
    assert.equal(stub.requests[0].headers.get("authorization"), "Bearer sk-1");
    assert.equal(stub.requests[0].headers.get("x-retry-count"), null);
    assert.equal(stub.requests[2].headers.get("x-retry-count"), "2");
  },
});

Deno.test({
  ...opts,
  name: "gives up after maxRetries with the typed error (RateLimitError, InternalServerError) and its request id",
  fn: async () => {
    await using stub = stubServer((_req, n) =>
      n <= 3
        ? jsonResponse(errorBody("queue full", "rate_limit_error", "queue_full"), 429, { "retry-after-ms": "1", "x-request-id": `q${n}` })
        : jsonResponse(errorBody("boom", "server_error"), 500, { "x-request-id": `s${n}`, "retry-after-ms": "1" })
    );
    const client = new QloraClient({ baseURL: stub.baseURL, maxRetries: 2 });
    const e = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    assert.ok(e instanceof RateLimitError, String(e));
    assert.equal(e.status, 429);
    assert.equal(e.code, "queue_full");
    assert.equal(e.requestId, "q3");
    assert.equal(stub.requests.length, 3);
    const e2 = await client.models.retrieve("m", { maxRetries: 0 }).catch((e) => e);
    assert.ok(e2 instanceof InternalServerError);
    assert.equal(e2.status, 500);
    assert.equal(e2.requestId, "s4");
    assert.equal(stub.requests.length, 4, "maxRetries: 0 per call");
  },
});

Deno.test({
  ...opts,
  name: "other 4xx are not retried; x-should-retry overrides; an error body that is not JSON still makes a typed error",
  fn: async () => {
    await using stub = stubServer((req, n) => {
      const path = new URL(req.url).pathname;
      if (path.endsWith("/bad")) return jsonResponse(errorBody("bad field", "invalid_request_error", "invalid_value", "temperature"), 400);
      if (path.endsWith("/unprocessable")) return new Response("plain text failure", { status: 422 });
      if (path.endsWith("/no-retry")) return jsonResponse(errorBody("no"), 503, { "x-should-retry": "false" });
      return jsonResponse({ n }, 200);
    });
    const client = new QloraClient({ baseURL: stub.baseURL, maxRetries: 3 });
    const bad = await client.get("/bad").catch((e) => e);
    assert.ok(bad instanceof BadRequestError);
    assert.equal(bad.param, "temperature");
    assert.equal(stub.requests.length, 1);
    const unp = await client.get("/unprocessable").catch((e) => e);
    assert.ok(unp instanceof UnprocessableEntityError);
    assert.equal(unp.body, "plain text failure");
    assert.match(unp.message, /422 plain text failure/);
    assert.equal(stub.requests.length, 2);
    await assert.rejects(client.get("/no-retry"), InternalServerError);
    assert.equal(stub.requests.length, 3);
  },
});

Deno.test({
  ...opts,
  name: "connection errors are retried, then APIConnectionError",
  fn: async () => {
    // a port that was just free: nothing listens there
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const client = new QloraClient({ baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 1 });
    const t0 = performance.now();
    const e = await client.models.list().catch((e) => e);
    assert.ok(e instanceof APIConnectionError, String(e));
    assert.equal(e.status, undefined);
    assert.ok(performance.now() - t0 >= 300, "one backoff (≥ 375 ms) before giving up");
  },
});

Deno.test({
  ...opts,
  name: "a timeout is APIConnectionTimeoutError (retried first); a stream's timeout covers only the wait for headers",
  fn: async () => {
    await using stub = stubServer(async (req) => {
      const path = new URL(req.url).pathname;
      if (path.endsWith("/slow")) {
        await new Promise((r) => setTimeout(r, 400));
        return jsonResponse({ ok: true });
      }
      // a slow stream: headers at once, chunks every 60 ms
      const enc = new TextEncoder();
      let i = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          await new Promise((r) => setTimeout(r, 60));
          if (i === 4) {
            c.enqueue(enc.encode("data: [DONE]\n\n"));
            return c.close();
          }
          c.enqueue(
            enc.encode(
              `data: ${
                JSON.stringify({
                  id: "c",
                  object: "chat.completion.chunk",
                  created: 0,
                  model: "m",
                  choices: [{ index: 0, delta: { content: String(i++) }, logprobs: null, finish_reason: null }],
                })
              }\n\n`,
            ),
          );
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    });
    const client = new QloraClient({ baseURL: stub.baseURL, timeout: 100, maxRetries: 1 });
    const e = await client.get("/slow").catch((e) => e);
    assert.ok(e instanceof APIConnectionTimeoutError, String(e));
    assert.equal(stub.requests.length, 2, "timed-out requests are retried");
    const stream = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], stream: true });
    let text = "";
    for await (const c of stream) text += c.choices[0].delta.content;
    assert.equal(text, "0123", "a stream longer than the timeout is not cut");
    assert.equal(JSON.parse(stub.requests.at(-1)!.body).stream, true);
    assert.equal(stub.requests.at(-1)!.headers.get("accept"), "text/event-stream");
  },
});

Deno.test({
  ...opts,
  name: "an abort during the backoff wait rejects with APIUserAbortError at once",
  fn: async () => {
    await using stub = stubServer(() => jsonResponse(errorBody("later"), 429, { "retry-after": "30" }));
    const client = new QloraClient({ baseURL: stub.baseURL, maxRetries: 5 });
    const ac = new AbortController();
    const t0 = performance.now();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(client.models.list({ signal: ac.signal }), APIUserAbortError);
    assert.ok(performance.now() - t0 < 5000);
  },
});

Deno.test({
  ...opts,
  name: "an error event in the middle of a stream throws an APIError with the request id",
  fn: async () => {
    await using stub = stubServer(() =>
      new Response(
        'data: {"id":"x","object":"text_completion","created":0,"model":"m","choices":[{"index":0,"text":"a","logprobs":null,"finish_reason":null}]}\n\n' +
          `data: ${JSON.stringify(errorBody("the engine failed", "server_error", "internal"))}\n\n`,
        { headers: { "content-type": "text/event-stream", "x-request-id": "rid-stream" } },
      )
    );
    const client = new QloraClient({ baseURL: stub.baseURL });
    const stream = await client.completions.create({ model: "m", prompt: "x", stream: true });
    const got: string[] = [];
    const e = await (async () => {
      for await (const c of stream) got.push(c.choices[0].text);
    })().catch((e) => e);
    assert.deepEqual(got, ["a"]);
    assert.ok(e instanceof APIError);
    assert.equal(e.requestId, "rid-stream");
    assert.equal(e.code, "internal");
    assert.match(e.message, /the engine failed/);
  },
});

Deno.test({
  ...opts,
  name: "cursor pages: await for one page, getNextPage, for-await over every item across pages",
  fn: async () => {
    const all = Array.from({ length: 5 }, (_, i) => ({ id: `job-${i}`, object: "fine_tuning.job", created_at: 100 - i, status: "queued" }));
    await using stub = stubServer((req) => {
      const u = new URL(req.url);
      const limit = Number(u.searchParams.get("limit") ?? 20);
      const after = u.searchParams.get("after");
      const start = after ? all.findIndex((j) => j.id === after) + 1 : 0;
      const data = all.slice(start, start + limit);
      return jsonResponse({ object: "list", data, has_more: start + limit < all.length }, 200, { "x-request-id": `p${start}` });
    });
    const client = new QloraClient({ baseURL: stub.baseURL });
    const first = await client.fineTuning.jobs.list({ limit: 2 });
    assert.deepEqual(first.data.map((j) => j.id), ["job-0", "job-1"]);
    assert.equal(first.hasNextPage(), true);
    assert.equal(first.requestId, "p0");
    const second = await first.getNextPage();
    assert.deepEqual(second.data.map((j) => j.id), ["job-2", "job-3"]);
    assert.equal(new URL(stub.requests[1].url).searchParams.get("after"), "job-1");
    assert.equal(new URL(stub.requests[1].url).searchParams.get("limit"), "2", "the page size carries over");
    const third = await second.getNextPage();
    assert.equal(third.hasNextPage(), false);
    await assert.rejects(() => third.getNextPage());
    const ids: string[] = [];
    for await (const j of client.fineTuning.jobs.list({ limit: 2 })) ids.push(j.id);
    assert.deepEqual(ids, all.map((j) => j.id));
    let pages = 0;
    for await (const _ of (await client.fineTuning.jobs.list({ limit: 2 })).iterPages()) pages++;
    assert.equal(pages, 3);
  },
});

Deno.test({
  ...opts,
  name: "jobs.wait() and jobs.follow() follow events (oldest first, each once) until the job ends",
  fn: async () => {
    let polls = 0;
    const events: { id: string; object: string; created_at: number; level: string; message: string }[] = [];
    await using stub = stubServer((req) => {
      const u = new URL(req.url);
      if (u.pathname.endsWith("/events")) {
        // newest first, as OpenAI lists them
        const desc = [...events].reverse();
        const limit = Number(u.searchParams.get("limit") ?? 20);
        const after = u.searchParams.get("after");
        const start = after ? desc.findIndex((e) => e.id === after) + 1 : 0;
        return jsonResponse({ object: "list", data: desc.slice(start, start + limit), has_more: start + limit < desc.length });
      }
      polls++;
      for (let k = 0; k < 3; k++) {
        events.push({
          id: `ev-${events.length}`,
          object: "fine_tuning.job.event",
          created_at: events.length,
          level: "info",
          message: `step ${events.length}`,
        });
      }
      const status = polls < 4 ? "running" : "succeeded";
      return jsonResponse({
        id: "ftjob-1",
        object: "fine_tuning.job",
        status,
        fine_tuned_model: status === "succeeded" ? "ft:m:x:ftjob-1" : null,
      });
    });
    const client = new QloraClient({ baseURL: stub.baseURL });
    const seen: string[] = [];
    const statuses: string[] = [];
    const job = await client.fineTuning.jobs.wait("ftjob-1", {
      pollInterval: 10,
      onEvent: (e) => seen.push(e.id),
      onStatus: (j) => statuses.push(j.status),
    });
    assert.equal(job.status, "succeeded");
    assert.equal(job.fine_tuned_model, "ft:m:x:ftjob-1");
    assert.deepEqual(seen, events.map((e) => e.id));
    assert.deepEqual(statuses, ["running", "succeeded"]);

    // follow(): the same events as an async generator whose return value is the finished job
    polls = 0;
    events.length = 0;
    const it = client.fineTuning.jobs.follow("ftjob-1", { pollInterval: 10 });
    const followed: string[] = [];
    let r;
    while (!(r = await it.next()).done) followed.push(r.value.id);
    assert.equal(r.value.status, "succeeded");
    assert.deepEqual(followed, events.map((e) => e.id));

    const ac = new AbortController();
    polls = -1000; // never ends now
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(client.fineTuning.jobs.wait("ftjob-1", { pollInterval: 10, signal: ac.signal }), APIUserAbortError);
  },
});

Deno.test({
  ...opts,
  name: "files.create sends multipart with the file name; ids with ':' are escaped in paths; default headers",
  fn: async () => {
    let form: FormData | null = null;
    await using stub = stubServer(async (req) => {
      if (req.method === "POST") {
        form = await new Request(req.url, { method: "POST", headers: req.headers, body: stub.requests.at(-1)!.body }).formData();
      }
      return jsonResponse({ id: "file-1", object: "file", bytes: 3, created_at: 0, filename: "a.jsonl", purpose: "fine-tune" });
    });
    const client = new QloraClient({ baseURL: stub.baseURL + "/", defaultHeaders: { "x-team": "blue" } });
    await client.files.create({
      file: new TextEncoder().encode('{"prompt":"a","completion":"b"}\n'),
      purpose: "fine-tune",
      filename: "a.jsonl",
    });
    const f = (form as FormData | null)!.get("file") as File;
    assert.equal(f.name, "a.jsonl");
    assert.equal(await f.text(), '{"prompt":"a","completion":"b"}\n');
    assert.equal((form as FormData | null)!.get("purpose"), "fine-tune");
    assert.match(stub.requests[0].headers.get("content-type")!, /^multipart\/form-data; boundary=/);
    assert.equal(stub.requests[0].headers.get("x-team"), "blue");
    await client.models.retrieve("ft:tiny:sdk:ftjob-1");
    assert.equal(new URL(stub.requests[1].url).pathname, "/v1/models/ft%3Atiny%3Asdk%3Aftjob-1");
  },
});

Deno.test("SSE decoder: CRLF and CR line ends, multi-line data, comments, events split anywhere (even inside a UTF-8 character)", () => {
  const text = ': comment\r\nevent: note\r\ndata: {"a":\r\ndata: "é✓"}\r\n\r\ndata: two\rid: 7\r\rdata: [DONE]\n\ndata: tail';
  const bytes = new TextEncoder().encode(text);
  for (const step of [1, 2, 3, 5, 7, bytes.length]) {
    const d = new SSEDecoder();
    const out = [];
    for (let i = 0; i < bytes.length; i += step) out.push(...d.decode(bytes.subarray(i, i + step)));
    out.push(...d.flush());
    assert.deepEqual(out, [
      { event: "note", data: '{"a":\n"é✓"}', id: null },
      { event: null, data: "two", id: "7" },
      { event: null, data: "[DONE]", id: "7" },
      { event: null, data: "tail", id: "7" },
    ], `step ${step}`);
  }
});

Deno.test("backoff: exponential with jitter, capped; retry-after as seconds, milliseconds or a date", () => {
  for (let n = 0; n < 8; n++) {
    const ms = backoffMs(n);
    const base = Math.min(500 * 2 ** n, 8000);
    assert.ok(ms <= base && ms >= base * 0.75, `${n}: ${ms}`);
  }
  assert.equal(retryAfterMs(new Headers({ "retry-after": "2" })), 2000);
  assert.equal(retryAfterMs(new Headers({ "retry-after-ms": "25" })), 25);
  const d = retryAfterMs(new Headers({ "retry-after": new Date(Date.now() + 5000).toUTCString() }))!;
  assert.ok(d > 3000 && d <= 5000, String(d));
  assert.equal(retryAfterMs(new Headers()), null);
  assert.equal(backoffMs(0, new Headers({ "retry-after": "1" })), 1000);
  assert.ok(backoffMs(0, new Headers({ "retry-after": "3600" })) <= 500, "an absurd retry-after falls back to backoff");
});

Deno.test("Stream: tee() gives two readers the same chunks; toReadableStream() is NDJSON; a stream is iterated once", async () => {
  async function* gen() {
    for (let i = 0; i < 4; i++) yield { i };
  }
  const [a, b] = Stream.fromIterable(gen()).tee();
  const [ra, rb] = await Promise.all([a.toArray(), b.toArray()]);
  assert.deepEqual(ra, [{ i: 0 }, { i: 1 }, { i: 2 }, { i: 3 }]);
  assert.deepEqual(rb, ra);
  const s = Stream.fromIterable(gen());
  const text = await new Response(s.toReadableStream()).text();
  assert.equal(text, '{"i":0}\n{"i":1}\n{"i":2}\n{"i":3}\n');
  assert.throws(() => s[Symbol.asyncIterator](), /iterated once/);
});
