// lora.ts — trainable LoRA weights for a set of modules of a Llama model: A [r, in] and
// B [out, r] in f32 on the device, with their gradients. Initialized as PEFT does: A from
// kaiming_uniform(a = √5) = U(−1/√in, 1/√in), B zero, so the adapter starts as a no-op.
import type { Context, DeviceBuffer } from "../ffi/tensor.ts";
import type { LlamaModel, LoraModule } from "../model/llama.ts";
import { mulberry32 } from "../util/rng.ts";

export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: LoraModule[];
  useRslora: boolean;
}

/** PEFT's scaling: alpha / r, or alpha / √r with rsLoRA. */
export function loraScale(spec: Pick<LoraSpec, "r" | "alpha" | "useRslora">): number {
  return spec.useRslora ? spec.alpha / Math.sqrt(spec.r) : spec.alpha / spec.r;
}

export interface LoraPair {
  layer: number;
  module: LoraModule;
  inF: number;
  outF: number;
  A: DeviceBuffer;
  B: DeviceBuffer;
  dA: DeviceBuffer;
  dB: DeviceBuffer;
}

export class LoraWeights {
  readonly pairs: LoraPair[] = [];
  readonly #byKey = new Map<string, LoraPair>();
  readonly scale: number;

  constructor(readonly ctx: Context, model: LlamaModel, readonly spec: LoraSpec, seed: number) {
    if (!Number.isInteger(spec.r) || spec.r < 1 || spec.r > 1024) {
      throw new RangeError(`lora r must be an integer in [1, 1024] (got ${spec.r})`);
    }
    this.scale = loraScale(spec);
    const rand = mulberry32(seed);
    for (let l = 0; l < model.layers.length; l++) {
      for (const m of spec.targetModules) {
        const lin = model.layers[l].proj[m];
        const bound = 1 / Math.sqrt(lin.cols);
        const a = new Float32Array(spec.r * lin.cols);
        for (let i = 0; i < a.length; i++) a[i] = (2 * rand() - 1) * bound;
        const pair: LoraPair = {
          layer: l,
          module: m,
          inF: lin.cols,
          outF: lin.rows,
          A: ctx.upload(a),
          B: ctx.alloc(lin.rows * spec.r * 4, true),
          dA: ctx.alloc(a.length * 4, true),
          dB: ctx.alloc(lin.rows * spec.r * 4, true),
        };
        this.pairs.push(pair);
        this.#byKey.set(`${l}.${m}`, pair);
      }
    }
  }

  get(layer: number, module: LoraModule): LoraPair | undefined {
    return this.#byKey.get(`${layer}.${module}`);
  }

  get numParameters(): number {
    return this.pairs.reduce((s, p) => s + this.spec.r * (p.inF + p.outF), 0);
  }

  zeroGrad(): void {
    for (const p of this.pairs) {
      this.ctx.lib.check(this.ctx.lib.symbols.ql_fill_zero(this.ctx.ptr, p.dA.ptr, BigInt(p.dA.bytes)), "ql_fill_zero");
      this.ctx.lib.check(this.ctx.lib.symbols.ql_fill_zero(this.ctx.ptr, p.dB.ptr, BigInt(p.dB.bytes)), "ql_fill_zero");
    }
  }

  dispose(): void {
    for (const p of this.pairs) for (const b of [p.A, p.B, p.dA, p.dB]) b.dispose();
    this.pairs.length = 0;
    this.#byKey.clear();
  }
}
