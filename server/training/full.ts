// full.ts — full fine-tuning's trainable set: every weight of a 16/32-bit (dense f32) Llama base —
// the embeddings, every linear layer, the RMSNorm weights and lm_head — trained in place, each
// with an f32 gradient of its size. Tied embeddings are one tensor: the embedding lookup and the
// head both add into its gradient. A 4-bit base is refused: its weights are frozen quantization
// codes (NF4/FP4 indices and absmax constants), which no optimizer step can move; full
// fine-tuning needs the base loaded with `--quant none`.
import { type Context, type DeviceBuffer, DType } from "../ffi/tensor.ts";
import { type LlamaModel, LORA_MODULES, type LoraModule } from "../model/llama.ts";
import { moduleWeightName } from "../model/loader.ts";

/** A base tensor trained in place and its gradient (f32, same number of entries). */
export interface FullTensor {
  name: string; // its Hugging Face name
  param: DeviceBuffer;
  grad: DeviceBuffer;
}

export interface FullLayer {
  inputNorm: FullTensor;
  postNorm: FullTensor;
  proj: Record<LoraModule, FullTensor>;
}

export class FullFineTuneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FullFineTuneError";
  }
}

export class FullWeights {
  readonly tensors: FullTensor[] = [];
  readonly embed: FullTensor;
  readonly layers: FullLayer[] = [];
  readonly finalNorm: FullTensor;
  /** null: lm_head is tied to the embeddings (its gradient goes into embed.grad). */
  readonly head: FullTensor | null;

  constructor(readonly ctx: Context, model: LlamaModel) {
    const add = (name: string, param: DeviceBuffer): FullTensor => {
      const t = { name, param, grad: ctx.alloc(param.bytes, true) };
      this.tensors.push(t);
      return t;
    };
    // refuse before allocating anything: a 4-bit base, a bf16 tensor, linear biases
    const bf16 = (name: string) =>
      new FullFineTuneError(
        `full fine-tuning updates f32 weights in place (AdamW on f32 parameters), and ${name} is stored in bf16: ` +
          `load an f32 checkpoint with --quant none and f32 embeddings`,
      );
    for (const [l, layer] of model.layers.entries()) {
      for (const m of LORA_MODULES) {
        const w = layer.proj[m].weight, name = moduleWeightName(l, m);
        if (w.kind === "q4") {
          throw new FullFineTuneError(
            `full fine-tuning needs a 16/32-bit base (--quant none): ${name}.weight is 4-bit, and 4-bit weights are ` +
              `frozen quantization codes that an optimizer cannot update (QLoRA trains LoRA adapters on them instead)`,
          );
        }
        if (w.dtype !== DType.F32) throw bf16(`${name}.weight`);
        if (layer.proj[m].bias) throw new FullFineTuneError(`full fine-tuning of linear biases is not implemented (${name}.bias)`);
      }
    }
    if (model.embed.dtype !== DType.F32) throw bf16("model.embed_tokens.weight");
    if (model.lmHead && model.lmHead.dtype !== DType.F32) throw bf16("lm_head.weight");
    this.embed = add("model.embed_tokens.weight", model.embed.buf);
    for (const [l, layer] of model.layers.entries()) {
      const proj = {} as Record<LoraModule, FullTensor>;
      for (const m of LORA_MODULES) {
        const w = layer.proj[m].weight;
        if (w.kind !== "dense") throw new FullFineTuneError("unreachable: 4-bit weights are refused above");
        proj[m] = add(`${moduleWeightName(l, m)}.weight`, w.buf);
      }
      this.layers.push({
        inputNorm: add(`model.layers.${l}.input_layernorm.weight`, layer.inputNorm),
        postNorm: add(`model.layers.${l}.post_attention_layernorm.weight`, layer.postNorm),
        proj,
      });
    }
    this.finalNorm = add("model.norm.weight", model.finalNorm);
    this.head = model.lmHead ? add("lm_head.weight", model.lmHead.buf) : null;
  }

  /** Trained parameters (tied embeddings counted once). */
  get numParameters(): number {
    return this.tensors.reduce((s, t) => s + t.param.bytes / 4, 0);
  }

  zeroGrad(): void {
    for (const t of this.tensors) {
      this.ctx.lib.check(this.ctx.lib.symbols.ql_fill_zero(this.ctx.ptr, t.grad.ptr, BigInt(t.grad.bytes)), "ql_fill_zero");
    }
  }

  /** Frees the gradients (the parameters are the model's). */
  dispose(): void {
    for (const t of this.tensors) t.grad.dispose();
    this.tensors.length = 0;
  }
}
