// paper_paged.ts — paged AdamW under a budget smaller than its state (section 6 of `deno task
// paper`): the same AdamW steps on the same parameters and gradients, once with plain AdamW (all
// state resident) and once with the native paged AdamW whose state budget is a fraction of its
// state (the rest in a file-backed mapping, paged in per tensor for its step and dropped after).
// Measured: the optimizer's own accounting of resident state (peak), the process's peak resident
// set during the steps (VmHWM, reset before each run through /proc/self/clear_refs), the time of
// the optimizer steps, and whether the parameters after the last step are bit-identical.
import { Context, type DeviceBuffer } from "../../server/ffi/tensor.ts";
import { Optimizer, type OptimizerKindName } from "../../server/ffi/optim.ts";
import { mulberry32 } from "../../server/util/rng.ts";

export interface PagedRun {
  kind: OptimizerKindName;
  budget: number;
  seconds: number;
  /** Peak resident optimizer state (the native accounting), bytes. */
  peakResidentState: number;
  /** Peak resident set of the process during the steps, above its resident set before them, bytes. */
  peakRssAbove: number;
  /** SHA-256 of the parameters' bytes after the last step. */
  paramsSha256: string;
}

export interface PagedOptions {
  tensors: number;
  perTensor: number;
  steps: number;
  budgetFraction: number;
  spillDir: string;
}

export interface PagedResult {
  tensors: number;
  perTensor: number;
  steps: number;
  stateBytes: number;
  plain: PagedRun;
  paged: PagedRun;
  bitIdentical: boolean;
}

function procStatusKb(field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : NaN;
}

function uniform(n: number, seed: number, scale: number): Float32Array {
  const r = mulberry32(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * r() - 1) * scale;
  return out;
}

/** One optimizer's run, in this process (a fresh one: see pagedAdamw). */
async function runHere(o: PagedOptions, kind: OptimizerKindName, budget: number): Promise<PagedRun> {
  const ctx = new Context({ threads: 1 });
  const params: DeviceBuffer[] = Array.from({ length: o.tensors }, (_, i) => ctx.upload(uniform(o.perTensor, 100 + i, 0.05)));
  // a few distinct gradients per tensor, used in turn (step s uses gradient (s + i) mod 3)
  const grads = Array.from({ length: 3 }, (_, k) => params.map((_, i) => ctx.upload(uniform(o.perTensor, 1000 + 31 * k + i, 1))));
  try {
    const before = procStatusKb("VmRSS");
    Deno.writeTextFileSync("/proc/self/clear_refs", "5"); // resets VmHWM to the current RSS
    const opt = new Optimizer(ctx, kind, budget, o.spillDir);
    try {
      const slots = params.map(() => opt.add(o.perTensor));
      const h = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
      // one interval over all the steps (performance.now() may be coarse)
      const t0 = performance.now();
      for (let s = 1; s <= o.steps; s++) {
        for (const [i, p] of params.entries()) opt.step(slots[i], p, grads[(s + i) % 3][i], h, 1, s);
      }
      ctx.sync();
      const ms = performance.now() - t0;
      const peak = procStatusKb("VmHWM");
      const bytes = new Uint8Array(o.tensors * o.perTensor * 4);
      params.forEach((p, i) => bytes.set(new Uint8Array(p.readF32().buffer), i * o.perTensor * 4));
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      return {
        kind,
        budget,
        seconds: ms / 1000,
        peakResidentState: opt.memory().peakResident,
        peakRssAbove: peak - before,
        paramsSha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
      };
    } finally {
      opt.dispose();
    }
  } finally {
    for (const p of [...params, ...grads.flat()]) p.dispose();
    ctx.dispose();
  }
}

/** Plain AdamW, then paged AdamW under budgetFraction of the state, each in a child process of its
 * own (this file with --child), so that one's freed memory is not the other's baseline. */
export async function pagedAdamw(o: PagedOptions): Promise<PagedResult> {
  await Deno.mkdir(o.spillDir, { recursive: true });
  const stateBytes = o.tensors * o.perTensor * 8;
  const child = async (kind: OptimizerKindName, budget: number): Promise<PagedRun> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", new URL(import.meta.url).pathname, "--child", JSON.stringify({ o, kind, budget })],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) throw new Error(`paged AdamW child exited ${out.code}: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!) as PagedRun;
  };
  const plain = await child("adamw", 0);
  const paged = await child("paged_adamw", Math.floor(stateBytes * o.budgetFraction));
  return { ...o, stateBytes, plain, paged, bitIdentical: plain.paramsSha256 === paged.paramsSha256 };
}

if (import.meta.main && Deno.args[0] === "--child") {
  const { o, kind, budget } = JSON.parse(Deno.args[1]) as { o: PagedOptions; kind: OptimizerKindName; budget: number };
  console.log(JSON.stringify(await runHere(o, kind, budget)));
}
