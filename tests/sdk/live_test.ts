// live_test.ts — the SDK against a live server (server/main.ts in a child process on 127.0.0.1 with
// the tiny model and API keys): models, chat and completions (plain, streamed, aborted), adapters
// (register, upload, list, use per request, delete), typed errors with request ids, and — when the
// server has the routes — files, fine-tuning jobs with paging, and a job followed to completion.
import assert from "node:assert/strict";
import {
  APIError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  type ChatCompletion,
  type ChatCompletionChunk,
  ConflictError,
  NotFoundError,
  outputText,
  PermissionDeniedError,
  QloraClient,
  type Response,
  type ResponseStreamEvent,
  schemaResponseFormat,
  Stream,
} from "../../sdk/mod.ts";
import { KEYS, type LiveServer, modelShape, startServer, writeAdapter } from "./helpers.ts";
import { z } from "zod";

const messages = [{ role: "user" as const, content: "Say something." }];

Deno.test({
  name: "SDK against a live server",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const server: LiveServer = await startServer();
    try {
      const client = new QloraClient({ baseURL: server.baseURL, apiKey: KEYS.acme, maxRetries: 0 });
      const admin = new QloraClient({ baseURL: server.baseURL, apiKey: KEYS.admin, maxRetries: 0 });
      const beta = new QloraClient({ baseURL: server.baseURL, apiKey: KEYS.beta, maxRetries: 0 });
      const model = server.model;
      const origin = new URL(server.baseURL).origin;
      const doc = await (await fetch(`${origin}/openapi.json`)).json();
      const has = (p: string) => p in (doc.paths ?? {});

      await t.step("models: list (await and for-await) and retrieve with the memory report", async () => {
        const page = await client.models.list();
        assert.equal(page.object, "list");
        assert.ok(page.data.some((m) => m.id === model && m.object === "model"));
        assert.ok(page.requestId);
        assert.equal(page.hasNextPage(), false);
        const ids: string[] = [];
        for await (const m of client.models.list()) ids.push(m.id);
        assert.deepEqual(ids, page.data.map((m) => m.id));
        const detail = await client.models.retrieve(model);
        assert.equal(detail.id, model);
        assert.ok(detail.memory && detail.memory.total_bytes > 0);
        // the memory planner: the served model's weights as its report says; a named shape
        const plan = await client.models.planMemory({ kv_tokens: 512 });
        assert.equal(plan.quantized_weight_bytes, detail.memory!.quantized_weight_bytes);
        const big = await client.models.planMemory({ model: "llama-7b", budget_bytes: 4e9 });
        assert.equal(big.fits, false);
      });

      await t.step("chat: parse with a zod schema (grammar-constrained output, parsed and checked)", async () => {
        const Pet = z.object({
          kind: z.enum(["cat", "dog"]),
          age: z.number().int().min(0).max(20),
          tags: z.array(z.enum(["a", "b"])).max(2),
        });
        const out = await client.chat.completions.parse({ model, messages, response_format: Pet, n: 2, max_tokens: 60 });
        for (const c of out.choices) {
          assert.equal(c.finish_reason, "stop");
          assert.deepEqual(Pet.parse(JSON.parse(c.message.content!)), c.message.parsed);
        }
        const named = await client.chat.completions.parse({
          model,
          messages,
          response_format: schemaResponseFormat(Pet, "pet"),
          max_tokens: 60,
        });
        assert.ok(named.choices[0].message.parsed);
      });

      await t.step("chat: a completion, with its request id; withResponse()", async () => {
        const done: ChatCompletion = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0, seed: 1 });
        assert.equal(done.object, "chat.completion");
        assert.equal(done.choices.length, 1);
        assert.equal(typeof done.choices[0].message.content, "string");
        assert.equal(done.usage?.completion_tokens, 6);
        assert.equal(done.choices[0].finish_reason, "length");
        assert.match((done as unknown as { _request_id: string })._request_id, /.+/);
        assert.ok(!Object.keys(done).includes("_request_id"), "the request id is not an enumerable field");
        const { data, response, requestId } = await client.chat.completions
          .create({ model, messages, max_tokens: 6, temperature: 0, seed: 1 }, { requestId: "sdk-test-req-1" })
          .withResponse();
        assert.equal(requestId, "sdk-test-req-1");
        assert.equal(response.status, 200);
        assert.equal(data.choices[0].message.content, done.choices[0].message.content, "temperature 0 is deterministic");
      });

      await t.step("responses: create and stream (typed events) give chat's text; store: true is a typed 400", async () => {
        const ref = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
        const r: Response = await client.responses.create({ model, input: messages[0].content, max_output_tokens: 8, temperature: 0 });
        assert.equal(r.object, "response");
        assert.equal(outputText(r), ref.choices[0].message.content);
        assert.equal(r.usage?.output_tokens, 8);
        const stream: Stream<ResponseStreamEvent> = await client.responses.stream({
          model,
          input: messages[0].content,
          max_output_tokens: 8,
          temperature: 0,
        });
        let text = "", last: ResponseStreamEvent | null = null;
        for await (const e of stream) {
          if (e.type === "response.output_text.delta") text += e.delta;
          last = e;
        }
        assert.equal(text, outputText(r));
        assert.equal(last?.type, "response.incomplete");
        assert.equal(outputText(last!.response!), text);
        const e = await client.responses.create({ model, input: "x", store: true }).catch((e) => e);
        assert.ok(e instanceof BadRequestError);
        assert.equal(e.param, "store");
      });

      await t.step("chat: streaming gives typed chunks whose text equals the non-streamed answer", async () => {
        const ref = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
        const stream: Stream<ChatCompletionChunk> = await client.chat.completions.create({
          model,
          messages,
          max_tokens: 8,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        });
        assert.ok(stream instanceof Stream);
        assert.ok(stream.requestId);
        let text = "", finish: string | null = null, usage = null;
        for await (const chunk of stream) {
          assert.equal(chunk.object, "chat.completion.chunk");
          const c = chunk.choices[0];
          if (c) {
            text += c.delta.content ?? "";
            finish = c.finish_reason ?? finish;
          }
          if (chunk.usage) usage = chunk.usage;
        }
        assert.equal(text, ref.choices[0].message.content);
        assert.equal(finish, "length");
        assert.equal(usage?.completion_tokens, 8);
      });

      await t.step("chat: aborting a stream mid-way ends the loop and cancels the request", async () => {
        const stream = await client.chat.completions.create({ model, messages, max_tokens: 400, ignore_eos: true, stream: true });
        let n = 0;
        for await (const _ of stream) {
          if (++n === 3) stream.abort();
        }
        assert.equal(n, 3, "no chunk after abort()");
        assert.equal(stream.controller.signal.aborted, true);
        // breaking out of the loop cancels too
        const s2 = await client.chat.completions.create({ model, messages, max_tokens: 400, ignore_eos: true, stream: true });
        for await (const _ of s2) break;
        assert.equal(s2.controller.signal.aborted, true);
        // an AbortSignal passed to the call aborts the stream as well
        const ac = new AbortController();
        const s3 = await client.chat.completions.create({ model, messages, max_tokens: 400, ignore_eos: true, stream: true }, {
          signal: ac.signal,
        });
        let m = 0;
        for await (const _ of s3) if (++m === 2) ac.abort();
        assert.ok(m < 100);
        // the server is still fine
        const after = await client.chat.completions.create({ model, messages, max_tokens: 2 });
        assert.equal(after.choices.length, 1);
      });

      await t.step("a signal aborted before or during a call rejects with APIUserAbortError", async () => {
        const ac = new AbortController();
        ac.abort();
        await assert.rejects(client.models.list({ signal: ac.signal }), APIUserAbortError);
        const ac2 = new AbortController();
        const p = client.chat.completions.create({ model, messages, max_tokens: 400, ignore_eos: true }, { signal: ac2.signal });
        setTimeout(() => ac2.abort(), 20);
        await assert.rejects(p, APIUserAbortError);
      });

      await t.step("completions: plain, n > 1, and streamed", async () => {
        const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 5, temperature: 0 });
        assert.equal(c.object, "text_completion");
        assert.equal(c.choices[0].finish_reason, "length");
        const many = await client.completions.create({ model, prompt: "Hello", max_tokens: 3, n: 2, seed: 7 });
        assert.equal(many.choices.length, 2);
        const stream = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 5, temperature: 0, stream: true });
        let text = "";
        for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
        assert.equal(text, c.choices[0].text);
      });

      await t.step("adapters: register, retrieve, list, use per request, upload, delete; tenant isolation", async () => {
        const shape = modelShape();
        await writeAdapter(`${server.adapterRoot}/acme/a1`, shape, 11); // tenants register from <root>/<tenant>/
        const a = await client.adapters.create({ id: "sdk-a1", path: "acme/a1" });
        assert.equal(a.id, "sdk-a1");
        assert.equal(a.object, "adapter");
        assert.equal(a.owner, "acme");
        assert.equal((await client.adapters.retrieve("sdk-a1")).r, 4);
        assert.equal((await client.adapters.makeResident("sdk-a1")).resident, true);
        assert.equal((await client.adapters.evict("sdk-a1")).resident, false);
        const listed = await client.adapters.list();
        assert.deepEqual(listed.data.map((x) => x.id), ["sdk-a1"]);
        assert.ok((await client.models.list()).data.some((m) => m.id === "sdk-a1" && m.parent === model));

        // per-request adapter: model = adapter id
        const base = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8, temperature: 0 });
        const tuned = await client.completions.create({ model: "sdk-a1", prompt: "Once upon a time", max_tokens: 8, temperature: 0 });
        assert.equal(tuned.model, "sdk-a1");
        assert.notEqual(tuned.choices[0].text, base.choices[0].text, "the adapter changes the greedy output");

        // upload the same files under another id
        const cfg = await Deno.readTextFile(`${server.adapterRoot}/acme/a1/adapter_config.json`);
        const weights = await Deno.readFile(`${server.adapterRoot}/acme/a1/adapter_model.safetensors`);
        const up = await client.adapters.upload({ id: "sdk-up", adapter_config: JSON.parse(cfg), adapter_model: weights });
        assert.equal(up.source, "upload");
        const viaUpload = await client.completions.create({ model: "sdk-up", prompt: "Once upon a time", max_tokens: 8, temperature: 0 });
        assert.equal(viaUpload.choices[0].text, tuned.choices[0].text);

        // another tenant cannot see it
        await assert.rejects(beta.adapters.retrieve("sdk-a1"), NotFoundError);
        await assert.rejects(beta.chat.completions.create({ model: "sdk-a1", messages }), NotFoundError);
        assert.deepEqual((await beta.adapters.list()).data, []);
        // the admin sees every tenant's
        assert.ok((await admin.adapters.list()).data.some((x) => x.id === "sdk-a1"));

        // 409 for a taken id, 403 for registering for another tenant
        const conflict = await client.adapters.create({ id: "sdk-a1", path: "acme/a1" }).catch((e) => e);
        assert.ok(conflict instanceof ConflictError, String(conflict));
        assert.equal(conflict.status, 409);
        const denied = await client.adapters.create({ id: "sdk-x", path: "acme/a1", tenant: "beta" }).catch((e) => e);
        assert.ok(denied instanceof PermissionDeniedError, String(denied));
        assert.equal(denied.status, 403);

        // vLLM's load/unload endpoints
        assert.match(await client.adapters.load({ lora_name: "sdk-vllm", lora_path: "acme/a1" }), /Success/);
        assert.equal((await client.adapters.retrieve("sdk-vllm")).resident, true);
        assert.match(await client.adapters.unload({ lora_name: "sdk-vllm" }), /Success/);
        await assert.rejects(client.adapters.retrieve("sdk-vllm"), NotFoundError);

        const del = await client.adapters.delete("sdk-a1");
        assert.deepEqual({ ...del }, { id: "sdk-a1", object: "adapter", deleted: true });
        await client.adapters.delete("sdk-up");
        await assert.rejects(client.adapters.retrieve("sdk-a1"), NotFoundError);
      });

      await t.step("errors: typed per status, with the server's body, headers and request id", async () => {
        const nf = await client.models.retrieve("no-such-model").catch((e) => e);
        assert.ok(nf instanceof NotFoundError);
        assert.ok(nf instanceof APIError);
        assert.equal(nf.status, 404);
        assert.equal(nf.code, "model_not_found");
        assert.match(nf.requestId!, /.+/);
        assert.equal(nf.headers?.get("x-request-id"), nf.requestId);
        assert.equal(nf.error?.type, "invalid_request_error");

        const bad = await client.chat.completions.create({ model, messages, temperature: 5 }, { requestId: "sdk-bad-1" }).catch((e) => e);
        assert.ok(bad instanceof BadRequestError, String(bad));
        assert.equal(bad.status, 400);
        assert.equal(bad.param, "temperature");
        assert.equal(bad.requestId, "sdk-bad-1");
        assert.match(bad.message, /^400 /);

        const unknownModel = await client.chat.completions.create({ model: "nope", messages, stream: true }).catch((e) => e);
        assert.ok(unknownModel instanceof NotFoundError, "a streaming call that fails before streaming rejects with the typed error");

        const anon = new QloraClient({ baseURL: server.baseURL, apiKey: null, maxRetries: 0 });
        const e401 = await anon.models.list().catch((e) => e);
        assert.ok(e401 instanceof AuthenticationError);
        assert.equal(e401.status, 401);
        assert.equal(e401.code, "invalid_api_key");
        const wrong = new QloraClient({ baseURL: server.baseURL, apiKey: "sk-wrong-key-000", maxRetries: 0 });
        await assert.rejects(wrong.models.list(), AuthenticationError);
      });

      if (has("/v1/files")) {
        await t.step("files: upload JSONL, list with paging, retrieve, content, delete; a bad line is a 400 naming it", async () => {
          const jsonl = Array.from({ length: 4 }, (_, i) =>
            JSON.stringify({
              messages: [{ role: "user", content: `Question ${i}?` }, { role: "assistant", content: "The answer is blue." }],
            })).join("\n") + "\n";
          const created = [];
          for (let i = 0; i < 3; i++) {
            created.push(await client.files.create({ file: jsonl, purpose: "fine-tune", filename: `train-${i}.jsonl` }));
          }
          assert.equal(created[0].object, "file");
          assert.equal(created[0].filename, "train-0.jsonl");
          assert.equal(created[0].bytes, new TextEncoder().encode(jsonl).length);
          const got = await client.files.retrieve(created[1].id);
          assert.equal(got.id, created[1].id);
          const content = await client.files.content(created[0].id);
          assert.equal(await content.text(), jsonl);

          const first = await client.files.list({ limit: 2 });
          assert.equal(first.data.length, 2);
          assert.equal(first.hasNextPage(), true);
          const second = await first.getNextPage();
          assert.ok(second.data.length >= 1);
          const all: string[] = [];
          for await (const f of client.files.list({ limit: 1 })) all.push(f.id);
          assert.deepEqual([...all].sort(), created.map((f) => f.id).sort());
          // tenants: beta sees none of them
          await assert.rejects(beta.files.retrieve(created[0].id), NotFoundError);

          const badFile = await client.files.create({ file: jsonl + "{not json\n", purpose: "fine-tune" }).catch((e) => e);
          assert.ok(badFile instanceof BadRequestError, String(badFile));
          assert.match(badFile.message, /line 5/);

          const del = await client.files.delete(created[2].id);
          assert.equal(del.deleted, true);
          await assert.rejects(client.files.retrieve(created[2].id), NotFoundError);
        });
      }

      if (has("/v1/fine_tuning/jobs")) {
        await t.step(
          "fine-tuning: a job followed to completion with wait(), its events, checkpoints, and chat with the result",
          async () => {
            const rows = Array.from({ length: 16 }, (_, i) =>
              JSON.stringify({
                messages: [{ role: "user", content: `What is the secret? (${i % 4})` }, {
                  role: "assistant",
                  content: "zebra zebra zebra",
                }],
              }));
            const file = await client.files.create({
              file: new Blob([rows.join("\n") + "\n"]),
              purpose: "fine-tune",
              filename: "secret.jsonl",
            });
            const job = await client.fineTuning.jobs.create({
              model,
              training_file: file.id,
              suffix: "sdk",
              seed: 3,
              method: {
                type: "supervised",
                supervised: { hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate: 1e-2, lora_r: 4 } },
              },
            });
            assert.equal(job.object, "fine_tuning.job");
            const events: string[] = [];
            const losses: number[] = [];
            const statuses: string[] = [];
            const done = await client.fineTuning.jobs.wait(job.id, {
              pollInterval: 200,
              onEvent: (e) => {
                events.push(e.id);
                if (e.type === "metrics" && typeof e.data?.train_loss === "number") losses.push(e.data.train_loss);
              },
              onStatus: (j) => statuses.push(j.status),
            });
            assert.equal(done.status, "succeeded", JSON.stringify(done.error));
            assert.ok(done.fine_tuned_model);
            assert.equal(new Set(events).size, events.length, "each event reported once");
            assert.ok(losses.length >= 2 && losses.at(-1)! < losses[0], `training loss goes down: ${losses}`);
            const listed: string[] = [];
            for await (const e of client.fineTuning.jobs.events(job.id, { limit: 2 })) listed.push(e.id);
            assert.deepEqual([...listed].sort(), [...events].sort(), "wait() reported every event");
            const ckpts = await client.fineTuning.jobs.checkpoints(job.id);
            assert.ok(ckpts.data.length >= 1);
            const chat = await client.chat.completions.create({
              model: done.fine_tuned_model!,
              messages: [{ role: "user", content: "What is the secret? (1)" }],
              max_tokens: 6,
              temperature: 0,
            });
            assert.equal(chat.model, done.fine_tuned_model);

            // paging over jobs: make two more (cancelled at once)
            const more = [];
            for (let i = 0; i < 2; i++) {
              const j = await client.fineTuning.jobs.create({
                model,
                training_file: file.id,
                method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 50 } } },
              });
              more.push(await client.fineTuning.jobs.cancel(j.id));
            }
            const firstPage = await client.fineTuning.jobs.list({ limit: 1 });
            assert.equal(firstPage.data.length, 1);
            assert.equal(firstPage.hasNextPage(), true);
            const ids: string[] = [];
            for await (const j of client.fineTuning.jobs.list({ limit: 1 })) ids.push(j.id);
            assert.deepEqual([...ids].sort(), [job.id, ...more.map((j) => j.id)].sort());
            for (const j of more) assert.equal((await client.fineTuning.jobs.wait(j.id, { pollInterval: 100 })).status, "cancelled");
            await assert.rejects(beta.fineTuning.jobs.retrieve(job.id), NotFoundError);
          },
        );
      } else {
        console.log("  (the server has no /v1/fine_tuning/jobs yet: the fine-tuning step is skipped)");
      }
    } finally {
      await server.close();
    }
  },
});
