// optim.ts — the native AdamW optimizers (plain, paged, paged 8-bit) as a typed handle.
import type { Context, DeviceBuffer } from "./tensor.ts";

export const OptimizerKind = { adamw: 0, paged_adamw: 1, paged_adamw_8bit: 2 } as const;
export type OptimizerKindName = keyof typeof OptimizerKind;

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export class Optimizer implements Disposable {
  #ptr: Deno.PointerObject | null;
  readonly sizes: number[] = [];

  constructor(readonly ctx: Context, readonly kind: OptimizerKindName, budgetBytes = 0, spillDir: string | null = null) {
    const cell = new BigUint64Array(1);
    const dir = spillDir === null ? null : new TextEncoder().encode(spillDir + "\0");
    ctx.lib.check(ctx.lib.symbols.ql_optimizer_create(ctx.ptr, OptimizerKind[kind], BigInt(budgetBytes), dir, cell), "ql_optimizer_create");
    this.#ptr = Deno.UnsafePointer.create(cell[0]);
  }

  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("Optimizer is disposed");
    return this.#ptr;
  }

  /** Registers a tensor of n f32 parameters; returns its index. */
  add(n: number): number {
    const out = new BigInt64Array(1);
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_add(this.ptr, BigInt(n), out), "ql_optimizer_add");
    this.sizes.push(n);
    return Number(out[0]);
  }

  step(index: number, param: DeviceBuffer, grad: DeviceBuffer, h: AdamWHyper, gradScale: number, step: number): void {
    this.ctx.lib.check(
      this.ctx.lib.symbols.ql_optimizer_step(
        this.ptr,
        BigInt(index),
        param.ptr,
        grad.ptr,
        h.lr,
        h.beta1,
        h.beta2,
        h.eps,
        h.weightDecay,
        gradScale,
        BigInt(step),
      ),
      "ql_optimizer_step",
    );
  }

  getState(index: number): { m: Float32Array; v: Float32Array } {
    const n = this.sizes[index];
    const m = new Float32Array(n), v = new Float32Array(n);
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_get_state(this.ptr, BigInt(index), m, v), "ql_optimizer_get_state");
    return { m, v };
  }

  setState(index: number, m: Float32Array, v: Float32Array): void {
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_set_state(this.ptr, BigInt(index), m, v), "ql_optimizer_set_state");
  }

  /** Bytes of state: total, resident now, peak resident. */
  memory(): { total: number; resident: number; peakResident: number } {
    const out = new BigUint64Array(3);
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_memory(this.ptr, out), "ql_optimizer_memory");
    return { total: Number(out[0]), resident: Number(out[1]), peakResident: Number(out[2]) };
  }

  dispose(): void {
    if (this.#ptr !== null) {
      this.ctx.lib.symbols.ql_optimizer_destroy(this.#ptr);
      this.#ptr = null;
    }
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}
