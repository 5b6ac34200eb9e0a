// paper_paged.ts — paged AdamW under a budget smaller than its state (section 6 of `deno task
// paper`): the same AdamW steps on the same parameters and gradients, once with plain AdamW (all
// state resident) and once with the native paged AdamW whose state budget is a fraction of its
// state (the rest in a file-backed mapping, paged in per tensor for its step and dropped after).
// Measured: the optimizer's own accounting of resident state (peak), the process's peak resident
// set during the steps (VmHWM, reset before each run through /proc/self/clear_refs), the time of
// the optimizer steps, and whether the parameters after the last step are bit-identical.
import type { Context, DeviceBuffer } from "../../server/ffi/tensor.ts";
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
  params: Float32Array[];
}

export interface PagedResult {
  tensors: number;
  perTensor: number;
  steps: number;
  stateBytes: number;
  plain: PagedRun;
  paged: PagedRun;
  bitIdentical: boolean;
  spillDir: string;
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

export async function pagedAdamw(
  ctx: Context,
  o: { tensors: number; perTensor: number; steps: number; budgetFraction: number; spillDir: string },
): Promise<PagedResult> {
  const init = Array.from({ length: o.tensors }, (_, i) => uniform(o.perTensor, 100 + i, 0.05));
  // a few distinct gradients per tensor, used in turn (step s uses gradient (s + i) mod 3)
  const grads = Array.from(
    { length: 3 },
    (_, k) => Array.from({ length: o.tensors }, (_, i) => uniform(o.perTensor, 1000 + 31 * k + i, 1)),
  );
  const stateBytes = o.tensors * o.perTensor * 8;
  await Deno.mkdir(o.spillDir, { recursive: true });

  const run = (kind: OptimizerKindName, budget: number): PagedRun => {
    const params: DeviceBuffer[] = init.map((x) => ctx.upload(x));
    const gradBufs = grads.map((g) => g.map((x) => ctx.upload(x)));
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
          for (const [i, p] of params.entries()) opt.step(slots[i], p, gradBufs[(s + i) % 3][i], h, 1, s);
        }
        ctx.sync();
        const ms = performance.now() - t0;
        const peak = procStatusKb("VmHWM");
        return {
          kind,
          budget,
          seconds: ms / 1000,
          peakResidentState: opt.memory().peakResident,
          peakRssAbove: peak - before,
          params: params.map((p) => p.readF32()),
        };
      } finally {
        opt.dispose();
      }
    } finally {
      for (const p of [...params, ...gradBufs.flat()]) p.dispose();
    }
  };

  const plain = run("adamw", 0);
  const paged = run("paged_adamw", Math.floor(stateBytes * o.budgetFraction));
  const bitIdentical = plain.params.every((p, i) => {
    const a = new Uint32Array(p.buffer), b = new Uint32Array(paged.params[i].buffer);
    return a.length === b.length && a.every((v, j) => v === b[j]);
  });
  return { tensors: o.tensors, perTensor: o.perTensor, steps: o.steps, stateBytes, plain, paged, bitIdentical, spillDir: o.spillDir };
}
