// jobs_test.ts — fine-tuning jobs through the job runner (no HTTP): a job teaches the tiny model
// a fixed answer (loss well below its start, the fine-tuned model's greedy chat output changes as
// intended, the base stays as it was); checkpoints match PEFT's format field by field and load
// back; cancel; stop mid-job and resume on a new runner with the same final weights as an
// uninterrupted run; a resume that cannot happen fails with the reason; tenancy; hyperparameter
// checks; quant "none"; the database is write-ahead logged.
import assert from "node:assert/strict";
import { SECRET_ANSWER, SECRET_QUESTION, secretWordJsonl } from "../helpers.ts";
import { TEACH } from "./fixtures.ts";
import { openContext } from "../native/backends.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { applyChatTemplate } from "../../server/model/chat_template.ts";
import { type LlamaModel, LORA_MODULES, type LoraModule } from "../../server/model/llama.ts";
import { SafetensorsFile } from "../../server/model/safetensors.ts";
import { moduleDims, peftKey, readPeftAdapter } from "../../server/adapters/peft.ts";
import { AdapterRegistry } from "../../server/adapters/registry.ts";
import type { AdapterSlots } from "../../server/ffi/ops.ts";
import type { Context, DeviceBuffer } from "../../server/ffi/tensor.ts";
import { Store } from "../../server/store/db.ts";
import { FileStore } from "../../server/store/files.ts";
import { ClientError } from "../../server/util/errors.ts";
import { openModel } from "../../server/model/bundle.ts";
import { bundleBaseProvider } from "../../server/jobs/bases.ts";
import { type HyperparametersInput, resolveHyperparameters } from "../../server/jobs/hyperparameters.ts";
import { registryPublisher } from "../../server/jobs/publisher.ts";
import { JobRunner } from "../../server/jobs/runner.ts";
import { JobService } from "../../server/jobs/service.ts";
import { folderBaseProvider } from "./bases.ts";
import { loadCheckpoint, TRAINING_STATE, writeCheckpoint } from "../../server/training/checkpoints.ts";
import { Trainer, type TrainHyper } from "../../server/training/trainer.ts";

const QUESTION = SECRET_QUESTION, ANSWER = SECRET_ANSWER;
const A = { tenant: "acme", admin: false };
const B = { tenant: "beta", admin: false };

interface Env {
  root: string;
  modelDir: string;
  ctx: Context;
  store: Store;
  files: FileStore;
  bases: ReturnType<typeof folderBaseProvider>;
  registry: AdapterRegistry;
  /** The API side, as in the server: it wakes the test's runners when a job is created. */
  jobs: JobService;
  runner(opts?: { computeShare?: number; budget?: number; onCheckpoint?: (job: string, step: number) => void }): JobRunner;
  close(): Promise<void>;
}

let modelDir: string | null = null;
async function tinyModel(): Promise<string> {
  if (!modelDir) {
    modelDir = await Deno.makeTempDir({ prefix: "qlora-jobs-model-" });
    // std 0.15: see tests/training/trainer_test.ts
    await makeModel({ shape: "tiny", out: modelDir, seed: 1, std: 0.15 });
  }
  return modelDir;
}

async function env(): Promise<Env> {
  const root = await Deno.makeTempDir({ prefix: "qlora-jobs-" });
  const dir = await tinyModel();
  const ctx = openContext("cpu");
  const store = new Store(`${root}/qlora.db`);
  const files = new FileStore(store, `${root}/files`);
  const bases = folderBaseProvider(ctx, dir, { id: "tiny" });
  const base = await bases.acquire("tiny", "nf4");
  const registry = new AdapterRegistry(`${root}/adapters`, `${root}/uploads`, base.model.shape, ["tiny"]);
  const runners: JobRunner[] = [];
  const jobs = new JobService({ store, files, bases, onQueued: () => runners.forEach((r) => r.poke()) });
  return {
    root,
    modelDir: dir,
    ctx,
    store,
    files,
    bases,
    registry,
    jobs,
    runner(opts = {}) {
      const r = new JobRunner({
        store,
        files,
        checkpointDir: `${root}/adapters/.fine_tuning`,
        bases,
        publisher: registryPublisher(registry),
        computeShare: opts.computeShare ?? 1,
        optimizerBudgetBytes: opts.budget ?? 64 * 1024,
        log: null,
        onCheckpoint: opts.onCheckpoint,
      });
      runners.push(r);
      return r;
    },
    async close() {
      for (const r of runners) await r.stop();
      await bases.dispose();
      store.close();
      ctx.dispose();
      await Deno.remove(root, { recursive: true });
    },
  };
}

const enc = (s: string) => new TextEncoder().encode(s);

/** A loaded PEFT adapter on the device, as the forward's per-batch LoRA slots. */
async function loadAdapter(ctx: Context, dir: string, model: LlamaModel) {
  const mods = new Map<string, { a: DeviceBuffer; b: DeviceBuffer; r: number; scale: number }>();
  await readPeftAdapter(
    dir,
    model.shape,
    (m, w) => void mods.set(`${m.layer}.${m.module}`, { a: ctx.upload(w.a), b: ctx.upload(w.b), r: m.rank, scale: m.scale }),
  );
  return {
    slots(layer: number, module: LoraModule): AdapterSlots | null {
      const p = mods.get(`${layer}.${module}`);
      if (!p) return null;
      return {
        aPtrs: BigUint64Array.of(BigInt(Deno.UnsafePointer.value(p.a.ptr))),
        bPtrs: BigUint64Array.of(BigInt(Deno.UnsafePointer.value(p.b.ptr))),
        ranks: Int32Array.of(p.r),
        scales: Float32Array.of(p.scale),
      };
    },
    dispose() {
      for (const p of mods.values()) {
        p.a.dispose();
        p.b.dispose();
      }
    },
  };
}

/** Greedy continuation with the model's forward (the adapter applied when given). */
function greedy(
  model: LlamaModel,
  prompt: number[],
  n: number,
  adapter?: { slots(l: number, m: LoraModule): AdapterSlots | null },
): number[] {
  const cache = model.newKvCache(8, 16);
  const ids = prompt.slice();
  try {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const start = i === 0 ? 0 : ids.length - 1;
      const tokens = ids.slice(start);
      const T = tokens.length;
      const logits = model.forward({
        tokens: Int32Array.from(tokens),
        positions: Int32Array.from(tokens, (_, j) => start + j),
        slots: Int32Array.from(tokens, (_, j) => start + j),
        paged: {
          blockTables: Int32Array.from({ length: 8 }, (_, j) => j),
          qStart: Int32Array.of(0, T),
          ctxLens: Int32Array.of(start + T),
          S: 1,
          maxBlocks: 8,
        },
        logitRows: Int32Array.of(T - 1),
        adapters: adapter ? { rowAdapter: new Int32Array(T), slots: (l, m) => adapter.slots(l, m) } : undefined,
      }, cache);
      let best = 0;
      for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
      out.push(best);
      ids.push(best);
    }
    return out;
  } finally {
    cache.dispose();
  }
}

function metricsOf(jobs: JobService, caller: typeof A, id: string) {
  return jobs.events(caller, id, { limit: 1000 }).data.filter((e) => e.type === "metrics").reverse().map((e) =>
    e.data as Record<string, number>
  );
}

Deno.test("a job teaches the tiny model a fixed answer; served through its checkpoint, the base is unchanged", async () => {
  const e = await env();
  try {
    assert.equal(e.store.journalMode, "wal");
    const runner = e.runner();
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl()));
    const job = e.jobs.create(A, { model: "tiny", training_file: file.id, suffix: "banana", seed: 3, hyperparameters: TEACH });
    assert.equal(job.status, "validating_files");
    const done = await e.jobs.waitFor(job.id);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.equal(done.fineTunedModel, `ft:tiny:banana:${job.id}`);
    assert.ok(done.trainedTokens! > 0);
    const m = metricsOf(e.jobs, A, job.id);
    assert.equal(m.length, done.totalSteps);
    assert.ok(m.every((x) => typeof x.learning_rate === "number" && x.tokens_per_second > 0));
    const first = m[0].train_loss, last = m.at(-1)!.train_loss;
    assert.ok(last < 0.25 * first, `loss ${first} → ${last}`);

    // checkpoints: every ~20% of the steps and the final one, each a registered model of the tenant
    const ckpts = e.jobs.checkpoints(A, job.id, { limit: 100 }).data;
    assert.ok(ckpts.length >= 2);
    assert.equal(ckpts[0].step, done.totalSteps);
    for (const c of ckpts) {
      assert.equal(c.modelId, `ft:tiny:banana:${job.id}:ckpt-step-${c.step}`);
      assert.ok(e.registry.get(A, c.modelId), `${c.modelId} is registered`);
      assert.equal(e.registry.get(B, c.modelId), undefined);
    }
    const rec = e.registry.get(A, done.fineTunedModel!);
    assert.ok(rec);
    assert.equal(e.registry.get(B, done.fineTunedModel!), undefined, "another tenant cannot use the model");

    // greedy chat output: the fine-tuned model answers the phrase, the base as before
    const base = await e.bases.acquire("tiny", "nf4");
    const tok = base.tokenizer;
    const prompt = applyChatTemplate(tok, [{ role: "user", content: QUESTION }], { addGenerationPrompt: true }).ids;
    const n = tok.encode(ANSWER, { addSpecialTokens: false }).length;
    const before = greedy(base.model, prompt, n);
    const adapter = await loadAdapter(e.ctx, rec.dir, base.model);
    const tuned = greedy(base.model, prompt, n, adapter);
    adapter.dispose();
    assert.equal(tok.decode(tuned), ANSWER, `tuned model answers ${JSON.stringify(tok.decode(tuned))}`);
    assert.deepEqual(greedy(base.model, prompt, n), before, "the base model's output must not change");
    assert.notDeepEqual(before, tuned);
    // the paged optimizer stayed under its budget (plus the one spilled tensor paged in for its step:
    // the largest is down_proj's A, r × intermediate f32 m and v)
    const mem = runner.lastOptimizerMemory!;
    assert.ok(mem.total > 64 * 1024, "the state is larger than the budget");
    const largest = 8 * base.model.shape.intermediate * 8;
    assert.ok(mem.peakResident <= 64 * 1024 + largest, `peak resident ${mem.peakResident}`);
    assert.ok(mem.peakResident < mem.total);
    // nothing half-written is left beside the checkpoints
    for await (const d of Deno.readDir(`${e.root}/adapters/.fine_tuning/acme/${job.id}`)) assert.ok(!d.name.startsWith("."), d.name);
  } finally {
    await e.close();
  }
});

Deno.test("checkpoints match PEFT's format field by field and load back (weights and optimizer state)", async () => {
  const e = await env();
  try {
    const base = await e.bases.acquire("tiny", "nf4");
    const h: TrainHyper = {
      nEpochs: 1,
      batchSize: 2,
      learningRate: 1e-2,
      loraR: 4,
      loraAlpha: 8,
      loraDropout: 0.1,
      targetModules: ["q_proj", "v_proj", "down_proj"],
      useRslora: true,
      warmupRatio: 0,
      lrScheduler: "constant",
      maxGradNorm: 1,
      gradientAccumulationSteps: 1,
      maxSeqLen: 64,
      packing: true,
      weightDecay: 0,
      optimizer: "adamw",
      optimizerBudgetBytes: 0,
      seed: 5,
      checkpointEvery: 0,
      evalEvery: 0,
    };
    const trainer = new Trainer(e.ctx, base.model, h);
    const { parseJsonl, tokenizeExample } = await import("../../server/training/dataset.ts");
    const ex = parseJsonl(secretWordJsonl(4)).map((x) => tokenizeExample(base.tokenizer, x));
    await trainer.run(ex, null);
    const dir = `${e.root}/ck/step-${trainer.step}`;
    await writeCheckpoint(dir, trainer.state, { baseModel: "tiny", withOptimizer: true });
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
    assert.equal(cfg.peft_type, "LORA");
    assert.equal(cfg.task_type, "CAUSAL_LM");
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 8);
    assert.equal(cfg.lora_dropout, 0.1);
    assert.deepEqual(cfg.target_modules, ["q_proj", "v_proj", "down_proj"]);
    assert.equal(cfg.bias, "none");
    assert.equal(cfg.base_model_name_or_path, "tiny");
    assert.equal(cfg.use_rslora, true);
    assert.equal(cfg.fan_in_fan_out, false);
    const st = await SafetensorsFile.open(`${dir}/adapter_model.safetensors`);
    assert.equal(st.metadata.format, "pt", "PEFT (safetensors' torch writer) marks the file as format pt");
    const expected: string[] = [];
    for (let l = 0; l < base.model.shape.layers; l++) {
      for (const m of h.targetModules) {
        const d = moduleDims(base.model.shape, m);
        const group = ["q_proj", "k_proj", "v_proj", "o_proj"].includes(m) ? "self_attn" : "mlp";
        const a = `base_model.model.model.layers.${l}.${group}.${m}.lora_A.weight`,
          b = `base_model.model.model.layers.${l}.${group}.${m}.lora_B.weight`;
        assert.equal(a, peftKey(l, m, "A"));
        expected.push(a, b);
        assert.deepEqual(st.info(a).shape, [4, d.in]);
        assert.deepEqual(st.info(b).shape, [d.out, 4]);
        assert.equal(st.info(a).dtype, "F32");
        const p = trainer.lora.get(l, m)!;
        assert.deepEqual(await st.readF32(a), p.A.readF32());
        assert.deepEqual(await st.readF32(b), p.B.readF32());
      }
    }
    assert.deepEqual(st.names.sort(), expected.sort());
    st.close();

    // load into a fresh trainer: same weights, same optimizer state, same step
    const t2 = new Trainer(e.ctx, base.model, { ...h, seed: 99 });
    const step = await loadCheckpoint(dir, t2.state, base.model.shape);
    assert.equal(step, trainer.step);
    trainer.lora.pairs.forEach((p, i) => {
      assert.deepEqual(t2.lora.pairs[i].A.readF32(), p.A.readF32());
      assert.deepEqual(t2.lora.pairs[i].B.readF32(), p.B.readF32());
      for (const s of trainer.slots[i]) assert.deepEqual(t2.optimizer.getState(s), trainer.optimizer.getState(s));
    });
    // a checkpoint of another shape is refused with the reason
    const t3 = new Trainer(e.ctx, base.model, { ...h, loraR: 8 });
    await assert.rejects(() => loadCheckpoint(dir, t3.state, base.model.shape), /rank 4/);
    // the final adapter (no optimizer state) has no training_state file
    await writeCheckpoint(`${e.root}/ck/final`, trainer.state, { baseModel: "tiny", withOptimizer: false });
    await assert.rejects(() => Deno.stat(`${e.root}/ck/final/${TRAINING_STATE}`));
    for (const t of [trainer, t2, t3]) t.dispose();
  } finally {
    await e.close();
  }
});

/** Small, quick job hyperparameters with dropout (so the resumed RNG matters) and checkpoints every 2 steps. */
const RESUME: HyperparametersInput = {
  ...TEACH,
  n_epochs: 3,
  max_seq_len: 32,
  lora_r: 4,
  lora_alpha: 8,
  lora_dropout: 0.1,
  checkpoint_every: 2,
  optimizer: "paged_adamw",
};

async function finalWeights(dir: string): Promise<Map<string, Float32Array>> {
  const st = await SafetensorsFile.open(`${dir}/adapter_model.safetensors`);
  const out = new Map<string, Float32Array>();
  for (const n of st.names) out.set(n, await st.readF32(n));
  st.close();
  return out;
}

Deno.test("stop mid-job, restart a runner on the same database: it resumes from the checkpoint and ends with the uninterrupted run's weights", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(8)));
    // the reference: one uninterrupted run
    const ref = e.runner();
    const j0 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 11, hyperparameters: RESUME });
    const d0 = await e.jobs.waitFor(j0.id);
    assert.equal(d0.status, "succeeded", JSON.stringify(d0.error));
    await ref.stop();
    const want = await finalWeights(e.registry.get(A, d0.fineTunedModel!)!.dir);

    // the same job, stopped right after its second checkpoint (as if the process died there)
    let stopped: Promise<void> | null = null;
    const r1: JobRunner = e.runner({ onCheckpoint: (_, step) => void (step === 4 && (stopped = r1.stop())) });
    const j1 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 11, hyperparameters: RESUME });
    while (!stopped) await new Promise((r) => setTimeout(r, 2));
    await stopped;
    const mid = e.jobs.get(A, j1.id)!;
    assert.equal(mid.status, "running", `a stopped runner leaves the job as a crash would: ${JSON.stringify(mid)}`);
    assert.equal(e.jobs.checkpoints(A, j1.id).data[0].step, 4);
    assert.ok(mid.step >= 4 && mid.step < d0.totalSteps!, `stopped at step ${mid.step} of ${d0.totalSteps}`);

    e.runner();
    const d1 = await e.jobs.waitFor(j1.id);
    assert.equal(d1.status, "succeeded", JSON.stringify(d1.error));
    const msgs = e.jobs.events(A, j1.id, { limit: 1000 }).data.map((x) => x.message);
    assert.ok(msgs.some((m) => m.startsWith(`Resumed from the checkpoint at step`)), msgs.join("\n"));
    // one metrics event per step, none duplicated by the interruption
    const steps = metricsOf(e.jobs, A, j1.id).map((x) => x.step);
    assert.deepEqual(steps, Array.from({ length: d0.totalSteps! }, (_, i) => i + 1));
    const got = await finalWeights(e.registry.get(A, d1.fineTunedModel!)!.dir);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [k, v] of want) assert.deepEqual(got.get(k), v, `${k} differs after resume`);
    // the losses of the steps after the checkpoint match too
    const l0 = metricsOf(e.jobs, A, j0.id).map((x) => x.train_loss), l1 = metricsOf(e.jobs, A, j1.id).map((x) => x.train_loss);
    assert.deepEqual(l1, l0);
  } finally {
    await e.close();
  }
});

Deno.test("pause mid-job (OpenAI's pause/resume): a checkpoint at the paused step, then resume ends with the uninterrupted run's weights", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(8)));
    e.runner();
    const j0 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 11, hyperparameters: RESUME });
    const d0 = await e.jobs.waitFor(j0.id);
    assert.equal(d0.status, "succeeded", JSON.stringify(d0.error));
    const want = await finalWeights(e.registry.get(A, d0.fineTunedModel!)!.dir);

    const j1 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 11, hyperparameters: RESUME });
    while ((e.jobs.get(A, j1.id)!.step ?? 0) < 3) await new Promise((r) => setTimeout(r, 1));
    e.jobs.pause(A, j1.id);
    const paused = await e.jobs.waitFor(j1.id, ["paused"]);
    assert.ok(paused.step >= 3 && paused.step < d0.totalSteps!, `paused at step ${paused.step}`);
    assert.equal(e.jobs.checkpoints(A, j1.id).data[0].step, paused.step, "a checkpoint at the paused step");
    assert.throws(() => e.jobs.pause(A, j1.id), (err: unknown) => err instanceof ClientError && err.status === 409);
    assert.throws(() => e.jobs.resume(B, j1.id), (err: unknown) => err instanceof ClientError && err.status === 404);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(e.jobs.get(A, j1.id)!.status, "paused", "a paused job stays paused");
    assert.equal(e.jobs.resume(A, j1.id).status, "queued");
    const d1 = await e.jobs.waitFor(j1.id);
    assert.equal(d1.status, "succeeded", JSON.stringify(d1.error));
    assert.deepEqual(metricsOf(e.jobs, A, j1.id).map((x) => x.step), Array.from({ length: d0.totalSteps! }, (_, i) => i + 1));
    const got = await finalWeights(e.registry.get(A, d1.fineTunedModel!)!.dir);
    for (const [k, v] of want) assert.deepEqual(got.get(k), v, `${k} differs after pause and resume`);
    assert.throws(() => e.jobs.resume(A, j1.id), (err: unknown) => err instanceof ClientError && err.status === 409);
  } finally {
    await e.close();
  }
});

Deno.test("SIGKILL of the process mid-job: a new runner resumes from the last checkpoint and ends with the uninterrupted run's weights", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(8)));
    const ref = e.runner();
    const j0 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 12, hyperparameters: RESUME });
    const d0 = await e.jobs.waitFor(j0.id);
    assert.equal(d0.status, "succeeded", JSON.stringify(d0.error));
    await ref.stop();
    const want = await finalWeights(e.jobs.checkpoints(A, j0.id).data[0].dir);

    // the job is made here and run by a child process on the same database and folders
    const j1 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 12, hyperparameters: RESUME });
    const src = (p: string) => new URL(p, import.meta.url).href;
    const script = `${e.root}/child.ts`;
    await Deno.writeTextFile(
      script,
      `import { openContext } from "${src("../native/backends.ts")}";
import { Store } from "${src("../../server/store/db.ts")}";
import { FileStore } from "${src("../../server/store/files.ts")}";
import { JobRunner } from "${src("../../server/jobs/runner.ts")}";
import { folderBaseProvider } from "${src("./bases.ts")}";
const [root, modelDir] = Deno.args;
const ctx = openContext("cpu", 1);
const store = new Store(root + "/qlora.db");
new JobRunner({ store, files: new FileStore(store, root + "/files"), checkpointDir: root + "/adapters/.fine_tuning",
  bases: folderBaseProvider(ctx, modelDir, { id: "tiny" }), computeShare: 0.5, optimizerBudgetBytes: 64 * 1024,
  onCheckpoint: (_job, step) => console.log("CKPT " + step) });
`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `--config=${new URL("../../deno.json", import.meta.url).pathname}`, script, e.root, e.modelDir],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!/CKPT 4\n/.test(out)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the child ended before its second checkpoint: ${out}`);
      out += value;
    }
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel().catch(() => {});
    const mid = e.jobs.get(A, j1.id)!;
    assert.equal(mid.status, "running");
    assert.ok(mid.step < d0.totalSteps!, `killed at step ${mid.step} of ${d0.totalSteps}`);

    e.runner();
    const d1 = await e.jobs.waitFor(j1.id);
    assert.equal(d1.status, "succeeded", JSON.stringify(d1.error));
    const resumed = e.jobs.events(A, j1.id, { limit: 1000 }).data.map((x) => x.message).find((m) =>
      m.startsWith("Resumed from the checkpoint at step")
    );
    assert.ok(resumed, "resumed from a checkpoint");
    assert.deepEqual(metricsOf(e.jobs, A, j1.id).map((x) => x.step), Array.from({ length: d0.totalSteps! }, (_, i) => i + 1));
    const got = await finalWeights(e.jobs.checkpoints(A, j1.id).data[0].dir);
    for (const [k, v] of want) assert.deepEqual(got.get(k), v, `${k} differs after the kill and resume`);
    assert.ok(e.registry.get(A, d1.fineTunedModel!), "the resumed job's model is servable");
    // nothing half-written is left or served
    for await (const d of Deno.readDir(`${e.root}/adapters/.fine_tuning/acme/${j1.id}`)) assert.ok(!d.name.startsWith("."), d.name);
  } finally {
    await e.close();
  }
});

Deno.test("a newest checkpoint that does not load is skipped: the job resumes from the one before and still ends with the same weights", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(8)));
    const ref = e.runner();
    const j0 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 5, hyperparameters: RESUME });
    assert.equal((await e.jobs.waitFor(j0.id)).status, "succeeded");
    await ref.stop();
    const want = await finalWeights(e.jobs.checkpoints(A, j0.id).data[0].dir);
    let stopped: Promise<void> | null = null;
    const r1: JobRunner = e.runner({ onCheckpoint: (_, step) => void (step === 4 && (stopped = r1.stop())) });
    const j = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 5, hyperparameters: RESUME });
    while (!stopped) await new Promise((r) => setTimeout(r, 2));
    await stopped;
    const [newest] = e.jobs.checkpoints(A, j.id).data;
    assert.equal(newest.step, 4);
    await Deno.writeFile(`${newest.dir}/${TRAINING_STATE}`, new Uint8Array(12)); // damaged
    e.runner();
    const d = await e.jobs.waitFor(j.id);
    assert.equal(d.status, "succeeded", JSON.stringify(d.error));
    assert.ok(e.jobs.events(A, j.id, { limit: 1000 }).data.some((x) => x.message.startsWith("Resumed from the checkpoint at step 2 ")));
    const got = await finalWeights(e.jobs.checkpoints(A, j.id).data[0].dir);
    for (const [k, v] of want) assert.deepEqual(got.get(k), v, k);
  } finally {
    await e.close();
  }
});

Deno.test("a job whose checkpoint vanished while it was interrupted fails with the reason", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(8)));
    let stopped: Promise<void> | null = null;
    const r1: JobRunner = e.runner({ onCheckpoint: () => void (stopped ??= r1.stop()) });
    const j = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 1, hyperparameters: RESUME });
    while (!stopped) await new Promise((r) => setTimeout(r, 2));
    await stopped;
    for (const c of e.jobs.checkpoints(A, j.id, { limit: 100 }).data) await Deno.remove(c.dir, { recursive: true });
    e.runner();
    const d = await e.jobs.waitFor(j.id);
    assert.equal(d.status, "failed");
    assert.equal(d.error?.code, "resume_failed");
    assert.match(d.error!.message, /missing or incomplete/);
  } finally {
    await e.close();
  }
});

Deno.test("a job whose final model cannot be registered for serving fails with the reason (a checkpoint's failure only warns)", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(4)));
    const j = e.jobs.create(A, {
      model: "tiny",
      training_file: file.id,
      seed: 1,
      hyperparameters: { ...TEACH, n_epochs: 2, checkpoint_every: 2 },
    });
    // started after the job exists: it finds it queued (the service wakes only the env's runners)
    const runner = new JobRunner({
      store: e.store,
      files: e.files,
      checkpointDir: `${e.root}/adapters/.fine_tuning`,
      bases: e.bases,
      publisher: { publish: () => Promise.reject(new Error("the registry refuses it")) },
      log: null,
    });
    const d = await e.jobs.waitFor(j.id);
    assert.equal(d.status, "failed");
    assert.equal(d.fineTunedModel, null, "no model is announced");
    assert.equal(d.error?.code, "model_not_servable");
    assert.match(
      d.error!.message,
      /^the fine-tuned model ft:tiny::ftjob-\w+(:ckpt-step-12)? could not be registered for serving: the registry refuses it$/,
    );
    const warns = e.jobs.events(A, j.id, { limit: 1000 }).data.filter((ev) => ev.level === "warn").map((ev) => ev.message);
    assert.ok(warns.some((m) => /^the checkpoint .*:ckpt-step-2 could not be registered/.test(m)), warns.join("\n"));
    await runner.stop();
  } finally {
    await e.close();
  }
});

Deno.test("cancel: a queued job at once, a running one after its micro-batch; finished jobs cannot be cancelled", async () => {
  const e = await env();
  try {
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(24)));
    e.runner({ computeShare: 0.5 });
    const j1 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 1, hyperparameters: { ...TEACH, n_epochs: 20 } });
    const j2 = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 1, hyperparameters: TEACH });
    await e.jobs.waitFor(j1.id, ["running"]);
    while (e.jobs.get(A, j1.id)!.step < 1) await new Promise((r) => setTimeout(r, 5));
    assert.throws(() => e.jobs.cancel(B, j1.id), (err: unknown) => err instanceof ClientError && err.status === 404);
    assert.equal(e.jobs.cancel(A, j2.id).status, "cancelled");
    e.jobs.cancel(A, j1.id);
    const d1 = await e.jobs.waitFor(j1.id);
    assert.equal(d1.status, "cancelled");
    assert.ok(d1.step < d1.totalSteps!);
    assert.equal(d1.fineTunedModel, null);
    assert.throws(() => e.jobs.cancel(A, j1.id), (err: unknown) => err instanceof ClientError && err.status === 409);
    const msgs = e.jobs.events(A, j1.id).data.map((x) => x.message);
    assert.ok(msgs.some((m) => /cancelled at step/.test(m)));
  } finally {
    await e.close();
  }
});

Deno.test("the compute share: with 0.25 the runner yields about three times its training time between steps", async () => {
  const e = await env();
  try {
    const runner = e.runner({ computeShare: 0.25 });
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(4)));
    const j = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 1, hyperparameters: { ...TEACH, n_epochs: 1 } });
    assert.equal((await e.jobs.waitFor(j.id)).status, "succeeded");
    const { trainMs, yieldedMs } = runner.usage;
    assert.ok(trainMs > 0);
    assert.ok(Math.abs(yieldedMs / trainMs - 3) < 0.01, `yielded ${yieldedMs} ms for ${trainMs} ms of training`);
    // and the share can be changed while it runs (the server may lower it under load)
    runner.computeShare = 1;
  } finally {
    await e.close();
  }
});

Deno.test("tenancy: another tenant cannot see, list, cancel or train on a tenant's jobs and files", async () => {
  const e = await env();
  try {
    e.runner();
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(2)));
    assert.throws(
      () => e.jobs.create(B, { model: "tiny", training_file: file.id }),
      (err: unknown) => err instanceof ClientError && err.status === 400 && err.param === "training_file",
    );
    const j = e.jobs.create(A, { model: "tiny", training_file: file.id, seed: 1, hyperparameters: { ...TEACH, n_epochs: 1 } });
    assert.equal(e.jobs.get(B, j.id), undefined);
    assert.equal(e.jobs.list(B).data.length, 0);
    assert.equal(e.jobs.list(A).data.length, 1);
    assert.throws(() => e.jobs.events(B, j.id), ClientError);
    assert.throws(() => e.jobs.checkpoints(B, j.id), ClientError);
    assert.ok(e.jobs.get({ tenant: "root", admin: true }, j.id), "an admin sees every tenant's job");
    const d = await e.jobs.waitFor(j.id);
    assert.equal(d.status, "succeeded");
    assert.equal(e.registry.get(B, d.fineTunedModel!), undefined);
    assert.equal(e.registry.get(A, d.fineTunedModel!)?.tenant, "acme");
  } finally {
    await e.close();
  }
});

Deno.test("a job on the 16-bit base (quant none) runs; full fine-tuning is refused with the reason", async () => {
  const e = await env();
  try {
    e.runner();
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(2)));
    const j = e.jobs.create(A, {
      model: "tiny",
      training_file: file.id,
      seed: 1,
      hyperparameters: { ...TEACH, n_epochs: 1, quant: "none" },
    });
    const d = await e.jobs.waitFor(j.id);
    assert.equal(d.status, "succeeded", JSON.stringify(d.error));
    assert.equal(d.hyper.quant, "none");
    assert.throws(
      () => e.jobs.create(A, { model: "tiny", training_file: file.id, hyperparameters: { full_finetune: true } }),
      (err: unknown) =>
        err instanceof ClientError && err.param === "method.supervised.hyperparameters.full_finetune" && /not supported/.test(err.message),
    );
  } finally {
    await e.close();
  }
});

Deno.test("a runner can train on a base that is already loaded (bundleBaseProvider), keeping its own LoRA weights", async () => {
  const e = await env();
  try {
    const bundle = await openModel(e.ctx, e.modelDir, { quant: "nf4", id: "tiny" });
    const bases = bundleBaseProvider(e.ctx, bundle);
    assert.deepEqual(bases.quants(), ["nf4"]);
    await assert.rejects(() => bases.acquire("tiny", "none"), /not available/);
    const runner = new JobRunner({ store: e.store, files: e.files, bases, checkpointDir: `${e.root}/adapters/.fine_tuning`, log: null });
    const jobs = new JobService({ store: e.store, files: e.files, bases, onQueued: () => runner.poke() });
    const file = await e.files.create(A, "chat.jsonl", "fine-tune", enc(secretWordJsonl(2)));
    const j = jobs.create(A, { model: "tiny", training_file: file.id, seed: 1, hyperparameters: { ...TEACH, n_epochs: 1 } });
    assert.equal((await jobs.waitFor(j.id)).status, "succeeded");
    await runner.stop();
    // the shared base is untouched and still usable
    assert.ok(bundle.loaded.model.layers.length > 0);
    bundle.loaded.model.dispose();
  } finally {
    await e.close();
  }
});

Deno.test("hyperparameters: defaults, auto, and every out-of-range or unknown value names its field", () => {
  const ctx = { examples: 10, maxModelLen: 512, quants: ["nf4"] as ("nf4" | "none")[] };
  const d = resolveHyperparameters({}, ctx);
  assert.equal(d.n_epochs, 3);
  // "auto" as OpenAI documents it: about 0.2% of the examples, from 1 to 256
  assert.equal(d.batch_size, 1);
  assert.equal(resolveHyperparameters({}, { ...ctx, examples: 5000 }).batch_size, 10);
  assert.equal(resolveHyperparameters({ batch_size: "auto" }, { ...ctx, examples: 1e6 }).batch_size, 256);
  // the quant follows the served base unless asked
  assert.equal(d.quant, "nf4");
  assert.equal(resolveHyperparameters({}, { ...ctx, quants: ["none"] }).quant, "none");
  assert.equal(d.beta, undefined, "beta is DPO's");
  assert.equal(resolveHyperparameters({}, ctx, "dpo").beta, 0.1);
  assert.equal(resolveHyperparameters({ beta: 0.5 }, ctx, "dpo").beta, 0.5);
  assert.throws(
    () => resolveHyperparameters({ beta: 0 }, ctx, "dpo"),
    (e: unknown) => e instanceof ClientError && e.param === "method.dpo.hyperparameters.beta",
  );
  assert.equal(d.learning_rate, 2e-4);
  assert.equal(d.lora_alpha, 32);
  assert.deepEqual(d.target_modules, [...LORA_MODULES]);
  assert.equal(d.max_seq_len, 512);
  assert.equal(resolveHyperparameters({ learning_rate_multiplier: 2, learning_rate: 1e-3 }, ctx).learning_rate, 2e-3);
  assert.deepEqual(resolveHyperparameters({ target_modules: ["v_proj", "q_proj"] }, ctx).target_modules, ["q_proj", "v_proj"]);
  const cases: [HyperparametersInput | Record<string, unknown>, string][] = [
    [{ n_epochs: 0 }, "n_epochs"],
    [{ n_epochs: 1.5 }, "n_epochs"],
    [{ batch_size: "big" }, "batch_size"],
    [{ learning_rate_multiplier: -1 }, "learning_rate_multiplier"],
    [{ learning_rate: 0 }, "learning_rate"],
    [{ lora_r: 0 }, "lora_r"],
    [{ lora_alpha: -2 }, "lora_alpha"],
    [{ lora_dropout: 1 }, "lora_dropout"],
    [{ target_modules: ["wq"] }, "target_modules"],
    [{ target_modules: [] }, "target_modules"],
    [{ warmup_ratio: 1 }, "warmup_ratio"],
    [{ lr_scheduler: "step" }, "lr_scheduler"],
    [{ max_grad_norm: -1 }, "max_grad_norm"],
    [{ gradient_accumulation_steps: 0 }, "gradient_accumulation_steps"],
    [{ max_seq_len: 4096 }, "max_seq_len"],
    [{ optimizer: "sgd" }, "optimizer"],
    [{ quant: "none" }, "quant"],
    [{ quant: "int8" }, "quant"],
    [{ full_finetune: true }, "full_finetune"],
    [{ momentum: 0.9 }, "momentum"],
    [{ beta: 0.1 }, "beta"],
  ];
  for (const [h, field] of cases) {
    assert.throws(
      () => resolveHyperparameters(h as HyperparametersInput, ctx),
      (err: unknown) => err instanceof ClientError && err.status === 400 && err.param === `method.supervised.hyperparameters.${field}`,
      `${JSON.stringify(h)} should be refused naming ${field}`,
    );
  }
});
