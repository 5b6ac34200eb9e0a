// intent_test.ts — fine-tuning does what the user meant, over real HTTP with the official
// `openai` client: the README walk-through with a relative data folder succeeds and its model
// answers (batch_size counts examples, as in OpenAI's API: 32 examples × 30 epochs at batch_size
// 4 is 240 steps); prompt/completion data learns the completion with exactly its one leading
// space; DPO jobs on preference data; a job whose model cannot be served fails.
import assert from "node:assert/strict";
import OpenAI, { toFile } from "openai";
import { createServer, type Server, type ServerOptions } from "../../server/server.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { STORIES } from "../helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
type Job = OpenAI.FineTuning.Jobs.FineTuningJob & { total_steps: number | null; step: number };

async function serve(o: Partial<ServerOptions> & { modelDir: string; root: string }) {
  const server: Server = await createServer({
    modelId: undefined,
    quant: "nf4",
    adapterRoot: `${o.root}/adapters`,
    dataDir: `${o.root}/data`,
    threads: 1,
    maxNumSeqs: 4,
    env: false,
    log: null,
    trainComputeShare: 1,
    ...o,
  });
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, server.app.fetch);
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${srv.addr.port}/v1`, apiKey: "unused-without-keys", maxRetries: 0 });
  return {
    client,
    async upload(lines: unknown[]) {
      const text = lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
      return await client.files.create({ file: await toFile(new TextEncoder().encode(text), "train.jsonl"), purpose: "fine-tune" });
    },
    async wait(id: string, onRunning?: (j: Job) => void): Promise<Job> {
      for (let i = 0; i < 12_000; i++) {
        const j = await client.fineTuning.jobs.retrieve(id) as Job;
        if (j.status === "running") onRunning?.(j);
        if (["succeeded", "failed", "cancelled"].includes(j.status)) return j;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`job ${id} did not finish`);
    },
    async close() {
      await srv.shutdown();
      await server.close();
    },
  };
}

Deno.test({
  name: "fine-tuning with a relative data folder: batch_size 4 over 32 examples × 30 epochs is 240 steps, and the model answers exactly",
  ...opts,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-intent-" });
    const cwd = Deno.cwd();
    await makeModel({ shape: "tiny", out: `${root}/tiny` });
    Deno.chdir(root); // the server is started with relative folders, as `deno task start --data ./data` does
    const s = await serve({ modelDir: "./tiny", modelId: "tiny", root: ".", adapterRoot: "./data/adapters", dataDir: "./data" });
    try {
      const question = "What is the secret word?", answer = "The secret word is pineapple.";
      const example = { messages: [{ role: "user", content: question }, { role: "assistant", content: answer }] };
      const file = await s.upload(Array.from({ length: 32 }, () => example));
      const created = await s.client.fineTuning.jobs.create({
        model: "tiny",
        training_file: file.id,
        suffix: "pineapple",
        seed: 7,
        method: {
          type: "supervised",
          supervised: {
            hyperparameters: {
              n_epochs: 30,
              batch_size: 4,
              learning_rate_multiplier: 1,
              // our extensions beside OpenAI's three
              ...{ learning_rate: 3e-3, lora_r: 16, lora_alpha: 32, target_modules: "all-linear" },
            },
          },
        },
      });
      const estimates: (number | null | undefined)[] = [];
      const job = await s.wait(created.id, (j) => {
        if (j.step > 0) estimates.push(j.estimated_finish);
      });
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      assert.equal(job.total_steps, 240, "32 examples / batch_size 4 × 30 epochs");
      assert.ok(estimates.length > 0, "the job was seen running");
      assert.ok(estimates.every((t) => typeof t === "number" && t >= job.created_at), `estimated_finish while running: ${estimates}`);
      const reply = await s.client.chat.completions.create({
        model: job.fine_tuned_model!,
        messages: [{ role: "user", content: question }],
        temperature: 0,
        max_tokens: 24,
      });
      assert.equal(reply.choices[0].message.content, answer);
      // result_files: OpenAI's step-metrics CSV, a file of the job's tenant
      assert.equal(job.result_files.length, 1);
      const meta = await s.client.files.retrieve(job.result_files[0]);
      assert.equal(meta.purpose, "fine-tune-results");
      const csv = (await (await s.client.files.content(job.result_files[0])).text()).trim().split("\n");
      assert.equal(csv[0], "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy");
      assert.equal(csv.length, 1 + 240);
      const rows = csv.slice(1).map((l) => l.split(","));
      assert.deepEqual(rows.map((r) => Number(r[0])), Array.from({ length: 240 }, (_, i) => i + 1));
      const [first, last] = [rows[0], rows[239]].map((r) => ({ loss: Number(r[1]), acc: Number(r[2]) }));
      // (the random-weight model keeps a high loss even once its greedy answer is right: small logits)
      assert.ok(last.loss < first.loss && last.acc === 1 && first.acc < 0.5, `${JSON.stringify(first)} → ${JSON.stringify(last)}`);
      assert.ok(rows.every((r) => r[3] === "" && r[4] === ""), "no validation file: no validation columns");

      // continue training from the fine-tuned model: its weights start the run (a learning rate too
      // small to move them keeps its answer); its adapter's shape is kept, another is refused
      await assert.rejects(
        s.client.fineTuning.jobs.create({
          model: job.fine_tuned_model!,
          training_file: file.id,
          hyperparameters: { n_epochs: 1, ...{ lora_r: 8 } },
        }),
        (e: unknown) => e instanceof OpenAI.BadRequestError && /lora_r/.test(e.message),
      );
      const more = await s.client.fineTuning.jobs.create({
        model: job.fine_tuned_model!,
        training_file: file.id,
        suffix: "more",
        hyperparameters: { n_epochs: 1, batch_size: 4, ...{ learning_rate: 1e-12 } },
      });
      assert.equal(more.model, job.fine_tuned_model);
      const cont = await s.wait(more.id);
      assert.equal(cont.status, "succeeded", JSON.stringify(cont.error));
      assert.match(cont.fine_tuned_model!, /^ft:tiny:more:/);
      const again = await s.client.chat.completions.create({
        model: cont.fine_tuned_model!,
        messages: [{ role: "user", content: question }],
        temperature: 0,
        max_tokens: 24,
      });
      assert.equal(again.choices[0].message.content, answer, "the continued model starts from the fine-tuned weights");
    } finally {
      await s.close();
      Deno.chdir(cwd);
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "prompt/completion on stories260K learns the completion with its one leading space; a short job says it is short",
  ...opts,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-intent-" });
    const s = await serve({ modelDir: STORIES, root });
    try {
      const file = await s.upload(Array.from({ length: 16 }, () => ({ prompt: "Tom and Ben", completion: " saw a pineapple." })));
      const created = await s.client.fineTuning.jobs.create({
        model: "stories260K",
        training_file: file.id,
        seed: 1,
        hyperparameters: { n_epochs: 6, batch_size: 2, ...{ learning_rate: 1e-2, lora_r: 8, lora_dropout: 0 } },
      });
      const events = await s.client.fineTuning.jobs.listEvents(created.id);
      assert.ok(events.data.some((e) => e.level === "warn" && /only 48 optimizer steps/.test(e.message)), "a job under 50 steps warns");
      const job = await s.wait(created.id);
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      const c = await s.client.completions.create({ model: job.fine_tuned_model!, prompt: "Tom and Ben", max_tokens: 16, temperature: 0 });
      assert.ok(c.choices[0].text.startsWith(" saw a pineapple."), `one space, not two: ${JSON.stringify(c.choices[0].text)}`);
    } finally {
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "DPO jobs: preference files, method.dpo with beta, rewards per step, a servable model; wrong data refused at creation",
  ...opts,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-intent-" });
    await makeModel({ shape: "tiny", out: `${root}/tiny`, seed: 1, std: 0.15 });
    const s = await serve({ modelDir: `${root}/tiny`, modelId: "tiny", root });
    try {
      const pref = (q: string) => ({
        input: { messages: [{ role: "user", content: q }] },
        preferred_output: [{ role: "assistant", content: "Yes, gladly." }],
        non_preferred_output: [{ role: "assistant", content: "No." }],
      });
      const file = await s.upload(["Can you help?", "Will you come?", "Is it ready?", "Shall we go?"].map(pref));
      const chatFile = await s.upload([{ messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }] }]);
      // preference data is refused for supervised jobs and chat data for DPO, at creation
      await assert.rejects(
        s.client.fineTuning.jobs.create({ model: "tiny", training_file: file.id }),
        (e: unknown) => e instanceof OpenAI.BadRequestError && /train with DPO/.test(e.message),
      );
      await assert.rejects(
        s.client.fineTuning.jobs.create({ model: "tiny", training_file: chatFile.id, method: { type: "dpo" } }),
        (e: unknown) => e instanceof OpenAI.BadRequestError && /DPO trains on preference examples/.test(e.message),
      );
      const created = await s.client.fineTuning.jobs.create({
        model: "tiny",
        training_file: file.id,
        seed: 2,
        method: {
          type: "dpo",
          dpo: { hyperparameters: { beta: 0.5, n_epochs: 8, batch_size: 2, ...{ learning_rate: 1e-2, lora_dropout: 0 } } },
        },
      });
      assert.equal(created.method?.type, "dpo");
      assert.equal(created.method?.dpo?.hyperparameters?.beta, 0.5);
      const job = await s.wait(created.id);
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      assert.equal(job.total_steps, 16);
      const metrics = (await s.client.fineTuning.jobs.listEvents(created.id, { limit: 100 })).data
        .filter((e) => e.type === "metrics").map((e) => e.data as Record<string, number>).sort((a, b) => a.step - b.step);
      assert.equal(metrics.length, 16);
      assert.ok(Math.abs(metrics[0].train_loss - Math.LN2) < 1e-3, `DPO starts at ln 2 (policy = reference): ${metrics[0].train_loss}`);
      const last = metrics.at(-1)!;
      assert.ok(last.rewards_margin > 0 && last.rewards_accuracy === 1, JSON.stringify(last));
      // servable (which answer greedy decoding prefers is checked on the model: tests/training/dpo_test.ts)
      const reply = await s.client.chat.completions.create({
        model: job.fine_tuned_model!,
        messages: [{ role: "user", content: "Can you help?" }],
        temperature: 0,
        max_tokens: 8,
      });
      assert.equal(reply.choices[0].finish_reason === "length" || reply.choices[0].finish_reason === "stop", true);
    } finally {
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "a deleted fine-tuned model stays deleted after a restart (DELETE /v1/models/{id}); its checkpoints stay until deleted",
  ...opts,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-intent-" });
    await makeModel({ shape: "tiny", out: `${root}/tiny` });
    const start = () => serve({ modelDir: `${root}/tiny`, modelId: "tiny", root });
    let s = await start();
    try {
      const example = { messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }] };
      const file = await s.upload(Array.from({ length: 4 }, () => example));
      const created = await s.client.fineTuning.jobs.create({
        model: "tiny",
        training_file: file.id,
        hyperparameters: { n_epochs: 2, batch_size: 1, ...{ checkpoint_every: 4 } },
      });
      const job = await s.wait(created.id);
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      const ckpt = (await s.client.fineTuning.jobs.checkpoints.list(job.id)).data.find((c) =>
        c.step_number === 4
      )!.fine_tuned_model_checkpoint;
      await assert.rejects(s.client.models.delete("tiny"), (e: unknown) => e instanceof OpenAI.PermissionDeniedError);
      const del = await s.client.models.delete(job.fine_tuned_model!);
      assert.deepEqual(del, { id: job.fine_tuned_model, object: "model", deleted: true });
      await assert.rejects(s.client.models.retrieve(job.fine_tuned_model!), (e: unknown) => e instanceof OpenAI.NotFoundError);
      await s.close();
      s = await start();
      // the job is still listed as it ended; its model is not served again, its other checkpoint is
      for (let i = 0; i < 200 && !(await s.client.models.list()).data.some((m) => m.id === ckpt); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      const ids = (await s.client.models.list()).data.map((m) => m.id);
      assert.ok(ids.includes(ckpt), `the checkpoint is back after the restart: ${ids}`);
      assert.ok(!ids.includes(job.fine_tuned_model!), `the deleted model stays deleted: ${ids}`);
      assert.equal((await s.client.fineTuning.jobs.retrieve(job.id)).status, "succeeded");
    } finally {
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
