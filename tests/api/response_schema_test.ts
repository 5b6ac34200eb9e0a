// response_schema_test.ts — every response of every implemented endpoint, and every stream chunk,
// validated against OpenAI's published response schemas (tests/fixtures/openai/, ajv 2020-12):
// chat and completions (JSON and SSE, with logprobs and usage), models list/get, files
// upload/list/get/delete, fine-tuning job/list/events/checkpoints, and errors (400, 401, 404, 429,
// the 429 with Retry-After).
import assert from "node:assert/strict";
import { createServer, type Server } from "../../server/server.ts";
import { json, sseData, storiesServer, tinyModel } from "../helpers.ts";
import { assertOpenAi } from "./openai_schema.ts";
import { type FinishEvent, finishReason } from "../../server/api/generation.ts";
import { ClientError } from "../../server/util/errors.ts";

const KEY = "sk-schema-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };

async function withTiny(fn: (s: Server) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "qlora-schema-" });
  const s = await createServer({
    modelDir: await tinyModel(),
    modelId: "tiny",
    quant: "nf4",
    adapterRoot: `${root}/adapters`,
    dataDir: `${root}/data`,
    threads: 1,
    maxNumSeqs: 8,
    env: false,
    log: null,
    keys: [{ key: KEY, tenant: "acme" }],
    trainComputeShare: 1,
  });
  try {
    await fn(s);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

const post = (s: Server, path: string, body: unknown) => s.app.request(path, json(body, AUTH));
const get = (s: Server, path: string, method = "GET") => s.app.request(path, { method, headers: AUTH });

async function body(res: Response, status = 200): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  return JSON.parse(text);
}

/** The chunks of an SSE response (asserting it ends with [DONE]). */
async function chunks(res: Response): Promise<Record<string, unknown>[]> {
  assert.equal(res.status, 200);
  const data = sseData(await res.text());
  assert.equal(data.at(-1), "[DONE]");
  return data.slice(0, -1).map((d) => JSON.parse(d));
}

const MESSAGES = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello there" }];

Deno.test("chat completions, JSON and every stream chunk, are OpenAI's CreateChatCompletion(Stream)Response", async () => {
  await withTiny(async (s) => {
    for (const extra of [{}, { logprobs: true, top_logprobs: 2 }, { n: 2, seed: 3, max_completion_tokens: 3 }, { prompt_logprobs: 2 }]) {
      const b = await body(await post(s, "/v1/chat/completions", { model: "tiny", messages: MESSAGES, max_tokens: 4, ...extra }));
      assertOpenAi("CreateChatCompletionResponse", b, `chat ${JSON.stringify(extra)}`);
      const choice = (b.choices as { message: { refusal: unknown }; finish_reason: string }[])[0];
      assert.equal(choice.message.refusal, null);
      assert.ok(["stop", "length"].includes(choice.finish_reason));
      assert.equal(typeof b.system_fingerprint, "string");
    }
    for (const extra of [{}, { logprobs: true, top_logprobs: 1, stream_options: { include_usage: true } }, { n: 2 }]) {
      const cs = await chunks(
        await post(s, "/v1/chat/completions", { model: "tiny", messages: MESSAGES, max_tokens: 4, stream: true, ...extra }),
      );
      assert.ok(cs.length >= 2);
      for (const c of cs) assertOpenAi("CreateChatCompletionStreamResponse", c, `chat chunk ${JSON.stringify(extra)}`);
      assert.ok(cs.every((c) => typeof c.system_fingerprint === "string"));
    }
  });
});

/** OpenAI's spec has no chunk schema for /v1/completions (a stream sends CreateCompletionResponse
 * objects), yet its API (and vLLM) send finish_reason null before a choice's last chunk: the
 * chunks are checked against CreateCompletionResponse with only that relaxed. */
function assertCompletionChunk(c: Record<string, unknown>, what: string): void {
  const choices = (c.choices as { finish_reason: unknown }[]).map((ch) =>
    ch.finish_reason === null ? { ...ch, finish_reason: "stop" } : ch
  );
  assertCompletion({ ...c, choices }, what);
}

/** With echo and logprobs, OpenAI's API gives the first prompt token a null logprob and null top
 * logprobs (nothing predicts it) where its spec says number and object: that first null is the one
 * thing relaxed; every other entry is checked as the spec says. */
function assertCompletion(c: Record<string, unknown>, what: string): void {
  type Lp = { token_logprobs: unknown[]; top_logprobs: unknown[] };
  const choices = (c.choices as { logprobs: Lp | null }[]).map((ch) => {
    const lp = ch.logprobs;
    if (!lp || lp.token_logprobs[0] !== null) return ch;
    assert.equal(lp.top_logprobs[0], null, what);
    return {
      ...ch,
      logprobs: { ...lp, token_logprobs: [0, ...lp.token_logprobs.slice(1)], top_logprobs: [{}, ...lp.top_logprobs.slice(1)] },
    };
  });
  assertOpenAi("CreateCompletionResponse", { ...c, choices }, what);
}

Deno.test("completions, JSON and every stream chunk, are OpenAI's CreateCompletionResponse", async () => {
  await withTiny(async (s) => {
    const cases = [{}, { logprobs: 2 }, { echo: true }, { echo: true, logprobs: 2 }, { prompt: ["a", "b"], n: 2 }, { prompt: [1, 2, 3] }, {
      prompt_logprobs: 1,
    }];
    for (const extra of cases) {
      const b = await body(await post(s, "/v1/completions", { model: "tiny", prompt: "Hello", max_tokens: 3, ...extra }));
      assertCompletion(b, `completion ${JSON.stringify(extra)}`);
      assert.equal(typeof b.system_fingerprint, "string");
    }
    for (const extra of [{}, { logprobs: 1, stream_options: { include_usage: true } }, { echo: true, n: 2 }, { echo: true, logprobs: 1 }]) {
      const cs = await chunks(await post(s, "/v1/completions", { model: "tiny", prompt: "Hello", max_tokens: 3, stream: true, ...extra }));
      for (const c of cs) assertCompletionChunk(c, `completion chunk ${JSON.stringify(extra)}`);
    }
  });
});

Deno.test("models, files, fine-tuning jobs, events and checkpoints are in OpenAI's shapes; errors are ErrorResponse", async () => {
  await withTiny(async (s) => {
    assertOpenAi("ListModelsResponse", await body(await get(s, "/v1/models")));
    assertOpenAi("Model", await body(await get(s, "/v1/models/tiny")));
    // files
    const line = JSON.stringify({ messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello!" }] });
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", new File([`${line}\n${line}\n`], "train.jsonl"));
    const file = await body(await s.app.request("/v1/files", { method: "POST", body: form, headers: AUTH }));
    assertOpenAi("OpenAIFile", file, "uploaded file");
    assertOpenAi("OpenAIFile", await body(await get(s, `/v1/files/${file.id}`)), "retrieved file");
    assertOpenAi("ListFilesResponse", await body(await get(s, "/v1/files")));
    // fine-tuning: a one-epoch job, then the job, the list, its events and checkpoints
    const job = await body(
      await post(s, "/v1/fine_tuning/jobs", {
        model: "tiny",
        training_file: file.id,
        suffix: "schema",
        method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 1, batch_size: 1, max_seq_len: 32 } } },
      }),
    );
    assertOpenAi("FineTuningJob", job, "created job");
    let done = job;
    for (let i = 0; i < 3000 && !["succeeded", "failed", "cancelled"].includes(done.status as string); i++) {
      await new Promise((r) => setTimeout(r, 20));
      done = await body(await get(s, `/v1/fine_tuning/jobs/${job.id}`));
    }
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assertOpenAi("FineTuningJob", done, "finished job");
    assertOpenAi("ListPaginatedFineTuningJobsResponse", await body(await get(s, "/v1/fine_tuning/jobs")));
    const events = await body(await get(s, `/v1/fine_tuning/jobs/${job.id}/events?limit=100`));
    assertOpenAi("ListFineTuningJobEventsResponse", events);
    const types = new Set((events.data as { type: string }[]).map((e) => e.type));
    assert.ok(types.has("metrics") && types.has("message"), [...types].join());
    assertOpenAi("ListFineTuningJobCheckpointsResponse", await body(await get(s, `/v1/fine_tuning/jobs/${job.id}/checkpoints`)));
    // a file's deletion (OpenAI's DeleteFileResponse is not among the reference schemas: its shape by hand)
    const del = await body(await get(s, `/v1/files/${file.id}`, "DELETE"));
    assert.deepEqual(del, { id: file.id, object: "file", deleted: true });
    // errors
    assertOpenAi("ErrorResponse", await body(await post(s, "/v1/completions", { model: "tiny", prompt: 5 }), 400), "400");
    assertOpenAi("ErrorResponse", await body(await post(s, "/v1/completions", { model: "tiny", prompt: "x", tools: [] }), 400), "400");
    assertOpenAi("ErrorResponse", await body(await post(s, "/v1/completions", { model: "nope", prompt: "x" }), 404), "404");
    assertOpenAi("ErrorResponse", await body(await s.app.request("/v1/models"), 401), "401");
    assertOpenAi("ErrorResponse", await body(await get(s, "/v1/files/file-nope"), 404), "404 file");
  });
});

Deno.test("429 is OpenAI's ErrorResponse with Retry-After", async () => {
  const root = await Deno.makeTempDir({ prefix: "qlora-schema-429-" });
  const s = await storiesServer(root, { maxNumSeqs: 1, maxQueue: 0 });
  try {
    const ac = new AbortController();
    const long = await s.app.request(
      new Request("http://x/v1/completions", {
        ...json({ model: "stories260K", prompt: "Once", max_tokens: 400, ignore_eos: true, stream: true }),
        signal: ac.signal,
      }),
    );
    const reader = long.body!.getReader();
    await reader.read();
    const res = await s.app.request("/v1/completions", json({ model: "stories260K", prompt: "x", max_tokens: 2 }));
    assert.equal(res.headers.get("retry-after"), "1");
    assertOpenAi("ErrorResponse", await body(res, 429), "429");
    ac.abort();
    await reader.cancel().catch(() => {});
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("finish_reason is only OpenAI's: the engine's abort becomes a 503 (request_aborted), an engine fault a 500", () => {
  const f = (finishReason: "stop" | "length" | "abort", stopReason: string | number | null = null) =>
    ({
      type: "finish",
      finishReason,
      stopReason,
      promptTokens: 1,
      completionTokens: 1,
      cachedTokens: 0,
      text: "",
    }) as unknown as FinishEvent;
  assert.equal(finishReason(f("stop", "\n")), "stop");
  assert.equal(finishReason(f("length")), "length");
  assert.throws(
    () => finishReason(f("abort")),
    (e: unknown) => e instanceof ClientError && e.status === 503 && e.code === "request_aborted",
  );
  assert.throws(() => finishReason(f("abort", "error: boom")), (e: unknown) => !(e instanceof ClientError) && /boom/.test(String(e)));
});
