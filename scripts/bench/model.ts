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

const THREADS = 2, PREFILL = 256, DECODE = 64, REPS = 3, BLOCK = 16;
const SHAPES = [
  { name: "135M", make: "smollm-135m", peer: "135m" },
  { name: "1.1B", make: "tinyllama-1.1b", peer: "1.1b" },
] as const;

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
    if (!(await exists(`${dir}/model.safetensors`))) {
      console.error(`making ${dir} ...`);
      await makeModel({ shape: shape.make, out: dir });
    }
    console.error(`llama.cpp ${shape.peer} ...`);
    const peer = await llamaCpp(shape.peer, THREADS, PREFILL, DECODE, REPS);
    console.error(peer.line);
    for (const activations of ["f32", "bf16"] as const) {
      const ctx = new Context({ threads: THREADS });
      const before = rssBytes();
      const { model } = await loadModel(ctx, dir, { quant: "nf4", activations });
      const report = memoryReport(model);
      const cache = model.newKvCache(Math.ceil((PREFILL + DECODE) / BLOCK), BLOCK);
      const resident = rssBytes() - before;
      try {
        timeSequence(model, cache); // warm-up
        const runs = Array.from({ length: REPS }, () => timeSequence(model, cache));
        const prefill = median(runs.map((r) => r.prefill)), decode = median(runs.map((r) => r.decode));
        // Bytes one decode step must read: every weight (4-bit codes, constants, 16/32-bit tensors).
        const bytesPerToken = report.quantized_weight_bytes + report.quantization_constant_bytes + report.unquantized_bytes;
        const bound = (bandwidth * 1e9) / bytesPerToken;
        const tag = `${shape.name} ${activations} act.`;
        rows.push(
          {
            name: `${tag} decode tok/s vs llama.cpp Q4_0`,
            ours: decode,
            reference: peer.decodeTokS,
            ratio: decode / peer.decodeTokS,
            target: ">= 2.0",
            unit: "tok/s",
          },
          {
            name: `${tag} decode vs DRAM bound (${(bytesPerToken / 1e6).toFixed(0)} MB/token)`,
            ours: decode,
            reference: bound,
            ratio: decode / bound,
            target: ">= 0.75",
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
