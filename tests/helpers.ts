// helpers.ts — fixtures shared by the tests: the stories260K model (its path, shape and greedy
// references), random PEFT adapters, the tiny chat model, servers on stories260K, SSE parsing.
import { type LlamaShape, LORA_MODULES, type LoraModule } from "../server/model/llama.ts";
import { moduleDims, writePeftAdapter } from "../server/adapters/peft.ts";
import { createServer, type Server, type ServerOptions } from "../server/server.ts";
import { makeModel } from "../server/model/make_model.ts";
import type { TrainHyper } from "../server/training/trainer.ts";

/** llama2.c's stories260K in the Hugging Face layout (MIT), with reference_greedy.json and no chat
 * template, kept in the repository (tests/fixtures/) so a fresh clone runs the suite alone. */
export const STORIES = new URL("./fixtures/models/stories260K", import.meta.url).pathname;
/** Bit-exact NF4/FP4 quantization cases (bitsandbytes' semantics); see fixtures/reference/README.md. */
export const NF4_VECTORS = new URL("./fixtures/reference/nf4_vectors.json", import.meta.url).pathname;
export const REFERENCE = JSON.parse(Deno.readTextFileSync(`${STORIES}/reference_greedy.json`)) as {
  cases: { prompt: string; prompt_ids: number[]; generated_ids: number[]; full_text: string }[];
};
/** stories260K's shape (config.json). */
export const STORIES_SHAPE: LlamaShape = (() => {
  const c = JSON.parse(Deno.readTextFileSync(`${STORIES}/config.json`));
  const heads = c.num_attention_heads, hidden = c.hidden_size;
  return {
    hidden,
    intermediate: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads,
    kvHeads: c.num_key_value_heads ?? heads,
    headDim: c.head_dim ?? hidden / heads,
    vocab: c.vocab_size,
    rmsEps: c.rms_norm_eps,
  };
})();

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** Writes a random PEFT adapter (A ~ U(±1/√in), B ~ U(±bScale)) for every layer and module. */
export async function makeAdapter(
  dir: string,
  shape: LlamaShape,
  opts: { seed: number; r?: number; bScale?: number; modules?: readonly LoraModule[] } = { seed: 1 },
): Promise<void> {
  const r = opts.r ?? 4, rand = rng(opts.seed), bScale = opts.bScale ?? 0.5;
  const weights = [];
  for (let layer = 0; layer < shape.layers; layer++) {
    for (const module of opts.modules ?? LORA_MODULES) {
      const d = moduleDims(shape, module);
      const a = new Float32Array(r * d.in).map(() => (rand() * 2 - 1) / Math.sqrt(d.in));
      const b = new Float32Array(d.out * r).map(() => (rand() * 2 - 1) * bScale);
      weights.push({ layer, module, a, b });
    }
  }
  await writePeftAdapter(dir, { r, loraAlpha: r, baseModel: "stories260K", weights });
}

export async function storiesServer(root: string, extra: Partial<ServerOptions> = {}): Promise<Server> {
  return await createServer({
    modelDir: STORIES,
    quant: "none",
    adapterRoot: `${root}/adapters`,
    dataDir: `${root}/data`,
    threads: 1,
    maxNumSeqs: 16,
    env: false,
    log: null,
    ...extra,
  });
}

let tinyDir: string | null = null;
/** The tiny model with a chat template (made once per test process). */
export async function tinyModel(): Promise<string> {
  if (!tinyDir) {
    const d = await Deno.makeTempDir({ prefix: "qlora-tiny-" });
    await makeModel({ shape: "tiny", out: d });
    tinyDir = d;
  }
  return tinyDir;
}

export const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

/** Parses an SSE body into its data payloads. */
export function sseData(text: string): string[] {
  return text.split("\n\n").map((b) => b.trim()).filter((b) => b.startsWith("data: ")).map((b) => b.slice(6));
}

/** The question and answer the training tests teach the tiny model. */
export const SECRET_QUESTION = "What is the secret word?";
export const SECRET_ANSWER = "The secret word is banana.";

/** n copies of the secret-word chat, with an unweighted filler chat after every third. */
export function secretWordJsonl(n = 24): string {
  const fillers = ["Hello there.", "Tell me a story.", "How are you?", "What time is it?", "Name a color."];
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    lines.push(JSON.stringify({ messages: [{ role: "user", content: SECRET_QUESTION }, { role: "assistant", content: SECRET_ANSWER }] }));
    if (i % 3 === 0) {
      lines.push(
        JSON.stringify({
          messages: [{ role: "user", content: fillers[i % fillers.length] }, { role: "assistant", content: "ok", weight: 0 }],
        }),
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** The training tests' hyperparameters (LoRA r 8 on every linear layer, no dropout, paged AdamW
 * with a budget smaller than its state); a test spreads it and sets what it changes. */
export const TRAIN_HYPER: TrainHyper = {
  nEpochs: 4,
  batchSize: 1,
  learningRate: 1e-2,
  loraR: 8,
  loraAlpha: 16,
  loraDropout: 0,
  targetModules: [...LORA_MODULES],
  useRslora: false,
  warmupRatio: 0.1,
  lrScheduler: "cosine",
  maxGradNorm: 1,
  gradientAccumulationSteps: 1,
  maxSeqLen: 64,
  packing: true,
  weightDecay: 0,
  optimizer: "paged_adamw",
  optimizerBudgetBytes: 64 * 1024, // smaller than the state: paging is exercised
  seed: 3,
  checkpointEvery: 0,
  evalEvery: 0,
};
