// fine_tuning_test.ts — /v1/files and /v1/fine_tuning/jobs over app.request, registered on the
// serving app (server/server.ts: the engine worker, the adapter registry, API keys):
// upload a chat file, start a job, follow its events and checkpoints, then chat with the result
// (the fine-tuned model answers the trained phrase, the base model does not) — and another tenant
// can neither see the job nor use its files or model. Also: every invalid request is a 400
// naming the field; cancel; cursor pages.
import assert from "node:assert/strict";
import { TEACH } from "./fixtures.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { createServer, type Server } from "../../server/server.ts";
import type { JobService } from "../../server/jobs/service.ts";

const KEY_A = "sk-acme-0123456789", KEY_B = "sk-beta-0123456789";
const QUESTION = "What is the secret word?";
const ANSWER = "The secret word is banana.";

function chatJsonl(n: number): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    lines.push(JSON.stringify({ messages: [{ role: "user", content: QUESTION }, { role: "assistant", content: ANSWER }] }));
    if (i % 3 === 0) {
      lines.push(
        JSON.stringify({ messages: [{ role: "user", content: "How are you?" }, { role: "assistant", content: "ok", weight: 0 }] }),
      );
    }
  }
  return lines.join("\n") + "\n";
}

interface Setup {
  server: Server;
  jobs: JobService;
  req(path: string, init?: RequestInit & { key?: string }): Promise<Response>;
  post(path: string, body: unknown, key?: string): Promise<Response>;
  upload(text: string, key?: string): Promise<{ id: string }>;
  close(): Promise<void>;
}

let modelDir: string | null = null;

async function setup(opts: { computeShare?: number } = {}): Promise<Setup> {
  if (!modelDir) {
    modelDir = await Deno.makeTempDir({ prefix: "qlora-ft-model-" });
    await makeModel({ shape: "tiny", out: modelDir, seed: 1, std: 0.15 });
  }
  const root = await Deno.makeTempDir({ prefix: "qlora-ft-" });
  const server = await createServer({
    modelDir,
    modelId: "tiny",
    quant: "nf4",
    adapterRoot: `${root}/adapters`,
    dataDir: `${root}/data`,
    threads: 1,
    maxNumSeqs: 4,
    env: false,
    log: null,
    keys: [{ key: KEY_A, tenant: "acme" }, { key: KEY_B, tenant: "beta" }],
    trainComputeShare: opts.computeShare ?? 1,
  });
  // the server's own wiring: the job service here, the training runner in the engine worker,
  // training on the served base
  const jobs = server.deps.jobs!;
  const req = (path: string, init: RequestInit & { key?: string } = {}) =>
    Promise.resolve(
      server.app.request(path, { ...init, headers: { authorization: `Bearer ${init.key ?? KEY_A}`, ...(init.headers ?? {}) } }),
    );
  const post = (path: string, body: unknown, key?: string) =>
    req(path, { method: "POST", key, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return {
    server,
    jobs,
    req,
    post,
    async upload(text: string, key?: string) {
      const form = new FormData();
      form.append("purpose", "fine-tune");
      form.append("file", new File([text], "train.jsonl"));
      const res = await req("/v1/files", { method: "POST", body: form, key });
      assert.equal(res.status, 200, await res.clone().text());
      return await res.json();
    },
    async close() {
      await server.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

async function waitDone(s: Setup, id: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 6000; i++) {
    const j = await (await s.req(`/v1/fine_tuning/jobs/${id}`)).json();
    if (["succeeded", "failed", "cancelled"].includes(j.status)) return j;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`job ${id} did not finish`);
}

async function chat(s: Setup, model: string, key = KEY_A): Promise<Response> {
  return await s.post(
    "/v1/chat/completions",
    { model, messages: [{ role: "user", content: QUESTION }], temperature: 0, max_tokens: 24 },
    key,
  );
}

Deno.test("fine-tuning over HTTP: upload, start a job, follow its events and checkpoints, chat with the result; other tenants cannot", async () => {
  const s = await setup();
  try {
    const file = await s.upload(chatJsonl(24));
    const before = await (await chat(s, "tiny")).json();
    const res = await s.post("/v1/fine_tuning/jobs", {
      model: "tiny",
      training_file: file.id,
      validation_file: file.id,
      suffix: "banana",
      seed: 3,
      metadata: { team: "search" },
      method: { type: "supervised", supervised: { hyperparameters: TEACH } },
    });
    assert.equal(res.status, 200, await res.clone().text());
    const job = await res.json();
    assert.equal(job.object, "fine_tuning.job");
    assert.match(job.id, /^ftjob-/);
    assert.equal(job.status, "validating_files");
    assert.equal(job.model, "tiny");
    assert.equal(job.fine_tuned_model, null);
    assert.deepEqual(job.hyperparameters, { n_epochs: 4, batch_size: 1, learning_rate_multiplier: 1 });
    assert.equal(job.method.supervised.hyperparameters.lora_r, 8);
    assert.equal(job.method.supervised.hyperparameters.quant, "nf4");
    assert.deepEqual(job.metadata, { team: "search" });
    assert.equal(job.user_provided_suffix, "banana");
    assert.equal(job.seed, 3);

    // another tenant sees nothing of it
    for (const p of ["", "/events", "/checkpoints"]) {
      assert.equal((await s.req(`/v1/fine_tuning/jobs/${job.id}${p}`, { key: KEY_B })).status, 404);
    }
    assert.equal((await s.post(`/v1/fine_tuning/jobs/${job.id}/cancel`, {}, KEY_B)).status, 404);
    assert.equal((await (await s.req("/v1/fine_tuning/jobs", { key: KEY_B })).json()).data.length, 0);
    // nor trains on the tenant's file
    const stolen = await s.post("/v1/fine_tuning/jobs", { model: "tiny", training_file: file.id }, KEY_B);
    assert.equal(stolen.status, 400);
    assert.equal((await stolen.json()).error.param, "training_file");

    const done = await waitDone(s, job.id);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.equal(done.fine_tuned_model, `ft:tiny:banana:${job.id}`);
    assert.ok((done.trained_tokens as number) > 0);
    assert.equal(typeof done.finished_at, "number");

    // events, newest first, in pages: metrics per step with loss, lr, tokens/s; validation loss at epoch ends
    const events: Record<string, unknown>[] = [];
    let after: string | null = null;
    while (true) {
      const page: { data: Record<string, unknown>[]; has_more: boolean } =
        await (await s.req(`/v1/fine_tuning/jobs/${job.id}/events?limit=7${after ? `&after=${after}` : ""}`)).json();
      events.push(...page.data);
      if (!page.has_more) break;
      after = page.data.at(-1)!.id as string;
    }
    assert.equal(events[0].message, "The job has successfully completed");
    assert.ok(events.every((e) => e.object === "fine_tuning.job.event"));
    const metrics = events.filter((e) => e.type === "metrics").map((e) => e.data as Record<string, number>).reverse();
    assert.equal(metrics.length, (done as { total_steps: number }).total_steps);
    assert.ok(metrics.every((m) => m.learning_rate >= 0 && m.tokens_per_second > 0 && Number.isFinite(m.train_loss)));
    const withValid = metrics.filter((m) => m.valid_loss !== undefined);
    assert.equal(withValid.length, 4, "validation loss at each epoch's end");
    assert.ok(withValid.at(-1)!.valid_loss < withValid[0].valid_loss, "validation loss falls");
    assert.ok(metrics.at(-1)!.train_loss < 0.25 * metrics[0].train_loss, `loss ${metrics[0].train_loss} → ${metrics.at(-1)!.train_loss}`);

    // checkpoints, each a servable model
    const ck = await (await s.req(`/v1/fine_tuning/jobs/${job.id}/checkpoints`)).json();
    assert.ok(ck.data.length >= 2);
    assert.equal(ck.data[0].step_number, metrics.length);
    for (const c of ck.data) {
      assert.equal(c.object, "fine_tuning.job.checkpoint");
      assert.equal(c.fine_tuning_job_id, job.id);
      assert.equal(c.fine_tuned_model_checkpoint, `ft:tiny:banana:${job.id}:ckpt-step-${c.step_number}`);
      assert.equal(typeof c.metrics.train_loss, "number");
    }

    // the fine-tuned model is listed and answers with the phrase; the base answers as before
    const models = await (await s.req("/v1/models")).json();
    assert.ok(models.data.some((m: { id: string }) => m.id === done.fine_tuned_model));
    const tuned = await (await chat(s, done.fine_tuned_model as string)).json();
    assert.ok(tuned.choices[0].message.content.startsWith(ANSWER), JSON.stringify(tuned.choices[0].message.content));
    assert.equal(tuned.model, done.fine_tuned_model);
    const after2 = await (await chat(s, "tiny")).json();
    assert.equal(after2.choices[0].message.content, before.choices[0].message.content);
    assert.ok(!before.choices[0].message.content.startsWith(ANSWER));
    const mid = await chat(s, ck.data.at(-1).fine_tuned_model_checkpoint);
    assert.equal(mid.status, 200);

    // another tenant can use neither the model nor a checkpoint
    const other = await chat(s, done.fine_tuned_model as string, KEY_B);
    assert.equal(other.status, 404);
    assert.equal((await other.json()).error.code, "model_not_found");
    assert.equal((await chat(s, ck.data[0].fine_tuned_model_checkpoint, KEY_B)).status, 404);
    const bModels = await (await s.req("/v1/models", { key: KEY_B })).json();
    assert.ok(!bModels.data.some((m: { id: string }) => m.id.startsWith("ft:")));
  } finally {
    await s.close();
  }
});

Deno.test("fine-tuning: every invalid request is a 400 in OpenAI's shape naming the field", async () => {
  const s = await setup();
  try {
    const file = await s.upload(chatJsonl(2));
    const hp = (h: Record<string, unknown>) => ({
      model: "tiny",
      training_file: file.id,
      method: { type: "supervised", supervised: { hyperparameters: h } },
    });
    const P = "method.supervised.hyperparameters";
    const cases: [unknown, string, RegExp?][] = [
      [hp({ n_epochs: 0 }), `${P}.n_epochs`],
      [hp({ n_epochs: "many" }), `${P}.n_epochs`],
      [hp({ batch_size: 1.5 }), `${P}.batch_size`],
      [hp({ learning_rate_multiplier: 0 }), `${P}.learning_rate_multiplier`],
      [hp({ learning_rate: -1 }), `${P}.learning_rate`],
      [hp({ lora_r: 0 }), `${P}.lora_r`],
      [hp({ lora_dropout: 1 }), `${P}.lora_dropout`],
      [hp({ target_modules: ["wq"] }), `${P}.target_modules.0`],
      [hp({ lr_scheduler: "step" }), `${P}.lr_scheduler`],
      [hp({ optimizer: "sgd" }), `${P}.optimizer`],
      [hp({ quant: "int8" }), `${P}.quant`],
      [hp({ max_seq_len: 100000 }), `${P}.max_seq_len`, /max_seq_len: must be in \[8, 512\]/],
      [hp({ full_finetune: true }), `${P}.full_finetune`, /full fine-tuning is not supported/],
      [hp({ momentum: 0.9 }), `${P}.momentum`, /Unrecognized request argument supplied/],
      [{ model: "tiny", training_file: file.id, color: "red" }, "color", /^Unrecognized request argument supplied: color$/],
      [{ model: "tiny", training_file: file.id, method: { type: "reinforcement" } }, "method.type", /not supported/],
      // chat examples cannot train with DPO (preference examples do): refused at creation, naming the file
      [{ model: "tiny", training_file: file.id, method: { type: "dpo" } }, "training_file", /DPO trains on preference examples/],
      [
        { model: "tiny", training_file: file.id, method: { type: "dpo", dpo: { hyperparameters: { beta: 3 } } } },
        "method.dpo.hyperparameters.beta",
      ],
      [
        { model: "tiny", training_file: file.id, method: { type: "supervised", supervised: { hyperparameters: { beta: 0.1 } } } },
        `${P}.beta`,
      ],
      [{ model: "tiny", training_file: file.id, method: { type: "supervised", dpo: {} } }, "method.dpo"],
      [{
        model: "tiny",
        training_file: file.id,
        hyperparameters: { n_epochs: 1 },
        method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2 } } },
      }, "hyperparameters"],
      [{ model: "nope", training_file: file.id }, "model"],
      [{ model: "tiny", training_file: "file-missing" }, "training_file"],
      [{ model: "tiny", training_file: file.id, validation_file: "file-missing" }, "validation_file"],
      [{ model: "tiny", training_file: file.id, suffix: "bad suffix!" }, "suffix"],
      [{ model: "tiny", training_file: file.id, suffix: "s".repeat(65) }, "suffix"],
      [{ model: "tiny", training_file: file.id, seed: -1 }, "seed"],
      [{ training_file: file.id }, "model"],
    ];
    for (const [body, param, re] of cases) {
      const res = await s.post("/v1/fine_tuning/jobs", body);
      const text = await res.text();
      assert.equal(res.status, 400, `${JSON.stringify(body)} → ${text}`);
      const e = JSON.parse(text).error;
      assert.equal(e.param, param, `${JSON.stringify(body)} → ${text}`);
      assert.equal(e.type, "invalid_request_error");
      assert.equal(typeof e.message, "string");
      if (re) assert.match(e.message, re);
    }
    // the deprecated top-level hyperparameters are accepted
    const ok = await s.post("/v1/fine_tuning/jobs", {
      model: "tiny",
      training_file: file.id,
      hyperparameters: { n_epochs: 1, batch_size: 2, learning_rate_multiplier: "auto" },
    });
    assert.equal(ok.status, 200, await ok.clone().text());
    const j = await ok.json();
    assert.deepEqual(j.hyperparameters, { n_epochs: 1, batch_size: 2, learning_rate_multiplier: 1 });
    assert.equal(j.method.type, "supervised");
    assert.equal((await s.req("/v1/fine_tuning/jobs/ftjob-nope")).status, 404);
    // the routes are in the OpenAPI document (the SDK's source)
    const doc = await (await s.server.app.request("/openapi.json")).json();
    for (
      const p of [
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/content",
        "/v1/fine_tuning/jobs",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
      ]
    ) {
      assert.ok(doc.paths[p], p);
    }
    assert.ok(doc.components.schemas.FineTuningHyperparameters.properties.lora_r);
    assert.equal((await s.req("/v1/fine_tuning/jobs?after=ftjob-nope")).status, 400);
  } finally {
    await s.close();
  }
});

Deno.test("fine-tuning: cancel over HTTP, list in cursor pages", async () => {
  const s = await setup({ computeShare: 0.5 });
  try {
    const file = await s.upload(chatJsonl(24));
    const long = await (await s.post("/v1/fine_tuning/jobs", {
      model: "tiny",
      training_file: file.id,
      method: { type: "supervised", supervised: { hyperparameters: { ...TEACH, n_epochs: 30 } } },
    })).json();
    const ids = [long.id];
    for (let i = 0; i < 3; i++) {
      ids.push((await (await s.post("/v1/fine_tuning/jobs", { model: "tiny", training_file: file.id, seed: i })).json()).id);
    }
    const p1 = await (await s.req("/v1/fine_tuning/jobs?limit=2")).json();
    assert.equal(p1.object, "list");
    assert.deepEqual(p1.data.map((j: { id: string }) => j.id), [ids[3], ids[2]]);
    assert.equal(p1.has_more, true);
    const p2 = await (await s.req(`/v1/fine_tuning/jobs?limit=2&after=${ids[2]}`)).json();
    assert.deepEqual(p2.data.map((j: { id: string }) => j.id), [ids[1], ids[0]]);
    assert.equal(p2.has_more, false);
    const byMeta = await (await s.req("/v1/fine_tuning/jobs?metadata[team]=none")).json();
    assert.equal(byMeta.data.length, 0);
    // 1,200 filters are a 400 naming metadata, not a 500 from an oversized query
    const many = Array.from({ length: 1200 }, (_, i) => `metadata[k${i}]=v`).join("&");
    const tooMany = await s.req(`/v1/fine_tuning/jobs?${many}`);
    assert.equal(tooMany.status, 400);
    assert.equal((await tooMany.json()).error.param, "metadata");

    // queued ones cancel at once
    for (const id of ids.slice(1)) {
      const c = await (await s.post(`/v1/fine_tuning/jobs/${id}/cancel`, {})).json();
      assert.equal(c.status, "cancelled");
    }
    // the running one after its current micro-batch
    while ((await (await s.req(`/v1/fine_tuning/jobs/${long.id}`)).json()).step < 1) await new Promise((r) => setTimeout(r, 10));
    const c = await s.post(`/v1/fine_tuning/jobs/${long.id}/cancel`, {});
    assert.equal(c.status, 200);
    const done = await waitDone(s, long.id);
    assert.equal(done.status, "cancelled");
    assert.equal(done.fine_tuned_model, null);
    const again = await s.post(`/v1/fine_tuning/jobs/${long.id}/cancel`, {});
    assert.equal(again.status, 409);
    assert.equal((await again.json()).error.code, "job_not_cancellable");
  } finally {
    await s.close();
  }
});
