// model.ts — suite `model` of `deno task bench`: batch-1 decode and prefill tokens/s of our NF4
// (double-quant) model runtime on random-weight SmolLM-135M and TinyLlama-1.1B shapes, against
// llama.cpp Q4_0 on the same shapes (shared/peers, measured in this run), the DRAM bandwidth
// bound of decode, and the resident memory of the loaded 1.1B model against its memory report.
import type { Row } from "./main.ts";
import { llamaCpp, readBandwidth } from "./peers.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { Context } from "../../server/ffi/tensor.ts";
import { loadModel, memoryReport } from "../../server/model/loader.ts";
import type { KvCache, LlamaModel } from "../../server/model/llama.ts";

const THREADS = 2, PREFILL = 256, DECODE = 64, REPS = 3, BLOCK = 16, START_REPS = 3;
const ALL_SHAPES = [
  { name: "135M", make: "smollm-135m", peer: "135m", activations: ["f32", "bf16"], large: false },
  { name: "1.1B", make: "tinyllama-1.1b", peer: "1.1b", activations: ["f32", "bf16"], large: false },
  // Llama-2-7B's sizes (LLaMA-1 7B's, with which they agree but for the context length); the
  // server's default activations only: a 7B pass costs minutes
  { name: "7B", make: "llama-7b", peer: "7b", activations: ["bf16"], large: true },
] as const;
const PICKED = (Deno.env.get("QLORA_BENCH_MODEL_SHAPES") ?? "135m,1.1b,7b").toLowerCase().split(",");
const SHAPES = ALL_SHAPES.filter((s) => PICKED.includes(s.name.toLowerCase()));
const KEEP = Deno.env.get("QLORA_BENCH_KEEP_MODELS") === "1";
const ROOT = new URL("../../", import.meta.url).pathname;

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

function rssBytes(): number {
  return Deno.memoryUsage().rss;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One sequence: prefill PREFILL-1 tokens, then decode DECODE tokens one at a time (llama.cpp's
 * bench does the same: pp over the prompt, tg from its last token). */
function timeSequence(model: LlamaModel, cache: KvCache): { prefill: number; decode: number } {
  const maxBlocks = Math.ceil((PREFILL + DECODE) / BLOCK);
  const table = Int32Array.from({ length: maxBlocks }, (_, i) => i);
  const run = (start: number, n: number) => {
    const tokens = Int32Array.from({ length: n }, (_, i) => 300 + (((start + i) * 7919) % 20000));
    const positions = Int32Array.from({ length: n }, (_, i) => start + i);
    const slots = positions.slice();
    model.forward({
      tokens,
      positions,
      slots,
      paged: { blockTables: table, qStart: Int32Array.of(0, n), ctxLens: Int32Array.of(start + n), S: 1, maxBlocks },
      logitRows: Int32Array.of(n - 1),
    }, cache);
  };
  let t0 = performance.now();
  run(0, PREFILL - 1);
  const prefill = (PREFILL - 1) / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  for (let i = 0; i < DECODE; i++) run(PREFILL - 1 + i, 1);
  const decode = DECODE / ((performance.now() - t0) / 1000);
  return { prefill, decode };
}

export async function run(): Promise<Row[]> {
  const rows: Row[] = [];
  const bandwidth = await readBandwidth(THREADS);
  rows.push({ name: "DRAM read bandwidth (2 threads)", ours: bandwidth, reference: null, ratio: null, target: null, unit: "GB/s" });
  for (const shape of SHAPES) {
    const dir = `/tmp/qlora-bench/${shape.make}`;
    const made = !(await exists(`${dir}/model.safetensors`));
    if (made) {
      console.error(`making ${dir} ...`);
      await makeModel({ shape: shape.make, out: dir });
    }
    // the large shape's start rows come first: their data folder's quantized cache then loads the
    // model below in seconds instead of quantizing it again
    const data = await Deno.makeTempDir({ prefix: "qlora-bench-start-" });
    try {
      if (shape.large) rows.push(...await startRows(shape.name, dir, data));
      console.error(`llama.cpp ${shape.peer} ...`);
      const peer = await llamaCpp(shape.peer, THREADS, PREFILL, DECODE, REPS);
      console.error(peer.line);
      rows.push(...await decodeRows(shape, dir, shape.large ? `${data}/quantized` : undefined, peer, bandwidth));
    } finally {
      await Deno.remove(data, { recursive: true }).catch(() => {});
      if (shape.large && made && !KEEP) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
  return rows;
}

async function decodeRows(
  shape: (typeof ALL_SHAPES)[number],
  dir: string,
  quantizedCacheDir: string | undefined,
  peer: { prefillTokS: number; decodeTokS: number },
  bandwidth: number,
): Promise<Row[]> {
  const rows: Row[] = [];
  {
    for (const activations of shape.activations) {
      const ctx = new Context({ threads: THREADS });
      const before = rssBytes();
      const { model } = await loadModel(ctx, dir, { quant: "nf4", activations, quantizedCacheDir });
      const report = memoryReport(model);
      const cache = model.newKvCache(Math.ceil((PREFILL + DECODE) / BLOCK), BLOCK);
      const resident = rssBytes() - before;
      try {
        timeSequence(model, cache); // warm-up
        const runs = Array.from({ length: REPS }, () => timeSequence(model, cache));
        const prefill = median(runs.map((r) => r.prefill)), decode = median(runs.map((r) => r.decode));
        // Bytes one decode step must read: every weight (4-bit codes, constants, 16/32-bit tensors)
        // but the embedding table, of which a step reads one row (unless it is the tied head).
        const embeddingTable = model.lmHead ? model.embed.buf.bytes : 0;
        const bytesPerToken = report.quantized_weight_bytes + report.quantization_constant_bytes + report.unquantized_bytes -
          embeddingTable;
        const bound = (bandwidth * 1e9) / bytesPerToken;
        const tag = `${shape.name} ${activations} act.`;
        rows.push(
          {
            name: `${tag} decode tok/s vs llama.cpp Q4_0`,
            ours: decode,
            reference: peer.decodeTokS,
            ratio: decode / peer.decodeTokS,
            target: shape.large ? ">= 1.1" : ">= 2.0",
            unit: "tok/s",
          },
          {
            name: `${tag} decode vs DRAM bound (${(bytesPerToken / 1e6).toFixed(0)} MB/token)`,
            ours: decode,
            reference: bound,
            ratio: decode / bound,
            target: shape.large ? ">= 0.85" : ">= 0.75",
            unit: "tok/s",
          },
          {
            name: `${tag} prefill tok/s vs llama.cpp Q4_0`,
            ours: prefill,
            reference: peer.prefillTokS,
            ratio: prefill / peer.prefillTokS,
            target: ">= 1.2",
            unit: "tok/s",
          },
        );
        if (shape.name === "1.1B" && activations === "f32") {
          rows.push({
            name: "1.1B resident memory vs memory report",
            ours: resident / 1e6,
            reference: (report.total_bytes + cache.bytes) / 1e6,
            ratio: resident / (report.total_bytes + cache.bytes),
            target: "<= 1.1",
            unit: "MB",
          });
        }
      } finally {
        cache.dispose();
        model.dispose();
        ctx.dispose();
      }
    }
  }
  return rows;
}

/** Drops the kernel's page cache (root only): a "cold" start then reads the weights from disk. */
async function dropPageCache(): Promise<boolean> {
  try {
    await new Deno.Command("sync").output();
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "1");
    return true;
  } catch {
    return false;
  }
}

/** VmRSS and VmHWM (peak) of a process, in bytes. */
async function processMemory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (key: string) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM") };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface StartFigures {
  seconds: number;
  rss: number;
  peak: number;
  memory: { total_bytes: number; kv_cache_bytes: number; kv_cache_budget_bytes?: number; kv_cache_tokens?: number };
  cache: string;
}

/** `deno task start --model dir --data data` as a user runs it (default flags but the port and
 * threads): seconds from spawn to the first 200 from /health, then one short chat completion, then
 * the server's resident memory and its memory report. */
async function serverStart(dir: string, data: string, id: string, waitForCache: boolean): Promise<StartFigures> {
  const port = freePort();
  const child = new Deno.Command("deno", {
    args: [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-net",
      "--allow-sys",
      "--allow-run",
      "server/main.ts",
      "--model",
      dir,
      "--model-id",
      id,
      "--data",
      data,
      "--port",
      String(port),
      "--threads",
      String(THREADS),
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const log: string[] = [];
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) log.push(decoder.decode(chunk));
  })();
  const t0 = performance.now();
  const url = `http://127.0.0.1:${port}`;
  try {
    let seconds = NaN;
    while (Number.isNaN(seconds)) {
      const status = await Promise.race([child.status.then(() => "exited"), new Promise((r) => setTimeout(() => r("poll"), 50))]);
      if (status === "exited") throw new Error(`the server exited before /health answered:\n${log.join("").slice(-2000)}`);
      const ok = await fetch(`${url}/health`).then(async (r) => (await r.body?.cancel(), r.ok)).catch(() => false);
      if (ok) seconds = (performance.now() - t0) / 1000;
    }
    const chat = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: id, messages: [{ role: "user", content: "Hello" }], max_tokens: 16 }),
    });
    if (!chat.ok) throw new Error(`chat: HTTP ${chat.status} ${await chat.text()}`);
    await chat.body?.cancel();
    const { rss, peak } = await processMemory(child.pid);
    const memory = (await (await fetch(`${url}/v1/models/${id}`)).json()).memory;
    // the first start writes the cache while it serves: the next start needs it complete
    const said = () => [...log.join("").matchAll(/quantized cache: (hit|written|writing|skipped|not written)/g)].map((m) => m[1]);
    while (waitForCache && said().at(-1) === "writing") await new Promise((r) => setTimeout(r, 250));
    return { seconds, rss, peak, memory, cache: said().at(-1) ?? "none" };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading.catch(() => {});
  }
}

/** The large shape's start and memory rows, the median of START_REPS rounds: a cold start from
 * the bf16 safetensors (it serves at once and writes the quantized cache meanwhile), then a cold
 * start from that cache, each timed to /health. */
async function startRows(name: string, dir: string, data: string): Promise<Row[]> {
  const id = `bench-${name.toLowerCase()}`;
  const first: StartFigures[] = [], second: StartFigures[] = [];
  let cold = true;
  for (let r = 0; r < START_REPS; r++) {
    await Deno.remove(`${data}/quantized`, { recursive: true }).catch(() => {});
    cold = (await dropPageCache()) && cold;
    const a = await serverStart(dir, data, id, true);
    cold = (await dropPageCache()) && cold;
    const b = await serverStart(dir, data, id, false);
    console.error(
      `${name} start ${r + 1}/${START_REPS}: from bf16 ${a.seconds.toFixed(1)} s (cache ${a.cache}), from the cache ${
        b.seconds.toFixed(1)
      } s (${b.cache})`,
    );
    if (a.cache !== "written" || b.cache !== "hit") {
      throw new Error(`the quantized cache was ${a.cache} then ${b.cache} (expected written, then hit)`);
    }
    first.push(a);
    second.push(b);
  }
  const mid = (xs: StartFigures[], key: (f: StartFigures) => number) => median(xs.map(key));
  const coldNote = cold ? " (cold page cache)" : "";
  const weightsAndKv = mid(second, (f) => f.memory.total_bytes);
  return [
    {
      name: `${name} start to /health from bf16 safetensors${coldNote}`,
      ours: mid(first, (f) => f.seconds),
      reference: null,
      ratio: null,
      target: "<= 20",
      unit: "s",
    },
    {
      name: `${name} start to /health from the quantized cache${coldNote}`,
      ours: mid(second, (f) => f.seconds),
      reference: null,
      ratio: null,
      target: "<= 5",
      unit: "s",
    },
    {
      name: `${name} peak resident memory of the first start (weights + KV cache ${(first[0].memory.total_bytes / 1e9).toFixed(2)} GB)`,
      ours: mid(first, (f) => f.peak) / 1e9,
      reference: first[0].memory.total_bytes / 1e9,
      ratio: mid(first, (f) => f.peak) / first[0].memory.total_bytes,
      target: null,
      unit: "GB",
    },
    {
      name: `${name} server resident memory, default flags, after a request vs weights + KV cache (${
        second[0].memory.kv_cache_tokens ?? "?"
      } tokens)`,
      ours: mid(second, (f) => f.rss) / 1e9,
      reference: weightsAndKv / 1e9,
      ratio: mid(second, (f) => f.rss) / weightsAndKv,
      target: "<= 1.1",
      unit: "GB",
    },
  ];
}
