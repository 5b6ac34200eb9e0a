// plan.ts — `deno task plan`: the memory a model takes for a serving or training workload, before
// loading it (server/serving/memory_plan.ts), and whether it fits a budget. `--measure` runs that
// workload in this process and prints the measured peak resident memory beside the plan;
// `--paper` prints the planner beside the QLoRA paper's memory table.
import { type Command, parseCommandLine } from "../server/util/flags.ts";
import { parseModelConfig } from "../server/model/config.ts";
import { SHAPES } from "../server/model/make_model.ts";
import { LORA_MODULES } from "../server/model/llama.ts";
import {
  configPlanModel,
  type MemoryPlan,
  PAPER_MEMORY_GB,
  PLAN_PAPER_SETTINGS,
  planMemory,
  type PlanModel,
  type PlanQuant,
  type PlanRequest,
  shapePlanModel,
} from "../server/serving/memory_plan.ts";
import { parseKvCacheMemory } from "../server/serving/kv_budget.ts";

const cmd: Command = {
  name: "deno task plan",
  summary: "Plans the memory of a model for serving or training (and with --measure, checks it against this process).",
  flags: {
    model: { type: "string", arg: "DIR", help: "a Hugging Face model folder (its config.json)", defaultText: "none" },
    shape: {
      type: "string",
      arg: "NAME",
      help: `a named shape (${Object.keys(SHAPES).filter((k) => SHAPES[k].vocabSize).join(", ")})`,
      defaultText: "none",
    },
    quant: { type: "string", choices: ["nf4", "fp4", "int4", "none"], default: "nf4", help: "quantization of the linear layers" },
    "no-double-quant": { type: "boolean", help: "quantization constants in f32 (no double quantization)" },
    "kv-tokens": { type: "int", default: 0, help: "tokens the KV cache holds (sequences × context)" },
    adapters: { type: "int", default: 0, help: "resident LoRA adapters (serving)" },
    train: { type: "boolean", help: "plan a training job instead of serving" },
    r: { type: "int", default: 16, help: "LoRA rank" },
    tokens: { type: "int", default: 1024, help: "tokens per training micro-batch" },
    "no-checkpointing": { type: "boolean", help: "keep every layer's activations (no recompute)" },
    "optimizer-budget": { type: "string", arg: "SIZE", help: "paged AdamW's resident budget (e.g. 256MiB)", defaultText: "all resident" },
    budget: { type: "string", arg: "SIZE", help: "memory available, to say whether it fits (e.g. 16GiB)", defaultText: "none" },
    measure: { type: "boolean", help: "run the workload here and print the measured peak RSS beside the plan" },
    paper: { type: "boolean", help: "the planner beside the QLoRA paper's memory table (Guanaco 7B-65B)" },
    json: { type: "boolean", help: "print JSON" },
  },
};

const { values } = parseCommandLine(cmd);
const v = values as Record<string, string | number | boolean | undefined>;

function shapeModel(name: string): PlanModel {
  const m = shapePlanModel(name);
  if (!m) throw new Error(`unknown shape "${name}"`);
  return m;
}

async function folderModel(dir: string): Promise<PlanModel> {
  return configPlanModel(parseModelConfig(JSON.parse(await Deno.readTextFile(`${dir}/config.json`))));
}

const MB = (b: number) => (b / 2 ** 20).toFixed(1);

function printPlan(p: MemoryPlan, title: string): void {
  console.log(title);
  for (const [k, x] of Object.entries(p)) {
    if (typeof x === "number" && k.endsWith("_bytes")) console.log(`  ${k.padEnd(30)} ${MB(x).padStart(10)} MiB`);
  }
  if (p.bits_per_quantized_parameter !== null) console.log(`  bits per quantized parameter   ${p.bits_per_quantized_parameter.toFixed(3)}`);
  if (p.fits !== null) console.log(`  fits the budget: ${p.fits ? "yes" : "no"}`);
}

if (v.paper) {
  const rows = Object.entries(PAPER_MEMORY_GB).map(([name, gb]) => {
    const p = planMemory(shapeModel(name), PLAN_PAPER_SETTINGS);
    return { model: name, paper_gb: gb, planned_gb: p.total_bytes / 1e9, ratio: p.total_bytes / 1e9 / gb };
  });
  if (v.json) console.log(JSON.stringify(rows, null, 2));
  else {
    console.log("QLoRA paper's memory table (Guanaco) beside the planner: NF4 + double quantization, 16-bit embeddings,");
    console.log("a 2,048-token 16-bit KV cache, 0.5 GB CUDA context (memory_plan.ts says why)");
    for (const r of rows) {
      console.log(
        `  ${r.model.padEnd(10)} paper ${String(r.paper_gb).padStart(3)} GB   planned ${r.planned_gb.toFixed(1).padStart(5)} GB   ratio ${
          r.ratio.toFixed(2)
        }`,
      );
    }
  }
  Deno.exit(0);
}

if (!v.model && !v.shape) {
  console.error("deno task plan: give --model DIR or --shape NAME (or --paper)");
  Deno.exit(2);
}
const model = v.model ? await folderModel(String(v.model)) : shapeModel(String(v.shape));
const bytesOf = (s: string | undefined) => {
  if (s === undefined) return undefined;
  const b = parseKvCacheMemory(s);
  if (!("bytes" in b)) throw new Error(`${s}: give a size with a unit (e.g. 2GiB)`);
  return b.bytes;
};
const req: PlanRequest = {
  quant: v.quant as PlanQuant,
  doubleQuant: !v["no-double-quant"],
  serving: v.train ? undefined : {
    kvTokens: Number(v["kv-tokens"]),
    adapters: Number(v.adapters) > 0 ? { count: Number(v.adapters), r: Number(v.r) } : undefined,
  },
  training: v.train
    ? {
      r: Number(v.r),
      tokensPerStep: Number(v.tokens),
      gradientCheckpointing: !v["no-checkpointing"],
      optimizerBudgetBytes: bytesOf(v["optimizer-budget"] as string | undefined),
    }
    : undefined,
  budgetBytes: bytesOf(v.budget as string | undefined),
};
const plan = planMemory(model, req);

if (!v.measure) {
  if (v.json) console.log(JSON.stringify(plan, null, 2));
  else printPlan(plan, `${v.model ?? v.shape}, ${v.train ? "training" : "serving"}, ${req.quant}`);
  Deno.exit(0);
}

// --measure: the workload in this process, then the peak resident memory (VmHWM)
if (!v.model) {
  console.error("deno task plan --measure needs --model DIR (a folder to load)");
  Deno.exit(2);
}
const { Context } = await import("../server/ffi/tensor.ts");
const { openModel } = await import("../server/model/bundle.ts");
const ctx = new Context({ threads: 1 });
const bundle = await openModel(ctx, String(v.model), { quant: req.quant });
if (req.training) {
  const { Trainer } = await import("../server/training/trainer.ts");
  const T = req.training.tokensPerStep, vocab = bundle.loaded.model.shape.vocab;
  const spill = await Deno.makeTempDir({ prefix: "qlora-plan-" });
  const trainer = new Trainer(ctx, bundle.loaded.model, {
    nEpochs: 1,
    batchSize: 1,
    method: "supervised",
    learningRate: 1e-4,
    loraR: req.training.r,
    loraAlpha: 2 * req.training.r,
    loraDropout: 0,
    targetModules: [...LORA_MODULES],
    useRslora: false,
    warmupRatio: 0,
    lrScheduler: "constant",
    maxGradNorm: 1,
    gradientAccumulationSteps: 1,
    maxSeqLen: T,
    packing: true,
    microBatchTokens: T,
    weightDecay: 0,
    optimizer: req.training.optimizerBudgetBytes !== undefined ? "paged_adamw" : "adamw",
    optimizerBudgetBytes: req.training.optimizerBudgetBytes ?? 2 ** 40,
    seed: 0,
    checkpointEvery: 0,
    evalEvery: 0,
    computeDtype: req.quant === "none" ? "f32" : "bf16",
    gradientCheckpointing: req.training.gradientCheckpointing ?? true,
  }, spill);
  let s = 7;
  const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
  const examples = Array.from({ length: 2 }, () => {
    const ids = Array.from({ length: T }, () => Math.floor(rand() * vocab));
    return { ids, weights: ids.map((_, i) => (i === 0 ? 0 : 1)) };
  });
  await trainer.run(examples, null, {});
  await Deno.remove(spill, { recursive: true });
} else if (req.serving) {
  // the engine decoding: 4 sequences to the end of their share of the KV tokens (a few tokens when
  // none are asked for)
  const { Engine } = await import("../server/engine/engine.ts");
  const seqs = 4, len = Math.max(4, Math.floor(req.serving.kvTokens / seqs));
  const engine = new Engine(bundle.loaded.model, bundle.tokenizer, {
    maxModelLen: Math.max(len, 16),
    maxNumSeqs: seqs,
    numBlocks: Math.ceil((seqs * len) / 16),
  });
  // every KV token written: 4 sequences decoding to the end of their share
  await Promise.all(Array.from({ length: seqs }, async (_, i) => {
    for await (const _e of engine.generate({ promptIds: [1 + i], stopping: { maxTokens: len - 1, ignoreEos: true } }));
  }));
}
const rss = Number(/VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;
if (v.json) console.log(JSON.stringify({ plan, measured_peak_bytes: rss, ratio: plan.total_bytes / rss }, null, 2));
else {
  printPlan(plan, `${v.model}, ${v.train ? "training" : "serving"}, ${req.quant}`);
  console.log(`  measured peak RSS              ${MB(rss).padStart(10)} MiB   planned / measured ${(plan.total_bytes / rss).toFixed(3)}`);
}
Deno.exit(0);
