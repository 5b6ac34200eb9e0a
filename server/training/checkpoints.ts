// checkpoints.ts — training checkpoints as PEFT adapter folders, written atomically.
//
// A checkpoint folder holds
//   adapter_config.json         PEFT's LoraConfig (peft_type LORA, task_type CAUSAL_LM, r,
//                               lora_alpha, lora_dropout, target_modules, bias "none",
//                               base_model_name_or_path, use_rslora, …)
//   adapter_model.safetensors   base_model.model.model.layers.N.<self_attn|mlp>.<module>.lora_A.weight [r, in]
//                               and ….lora_B.weight [out, r], F32 (server/adapters/peft.ts writes both)
//   training_state.safetensors  ours, for resuming: AdamW's m and v per LoRA tensor
//                               ("optimizer.<index>.m" / ".v", F32) and, in the metadata, the
//                               trainer's step, the optimizer kind and the job's hyperparameters.
// Nothing half-written is ever served or resumed from: the folder is built under a temporary
// name beside its final one, every file is fsynced, then the folder is renamed into place and
// its parent fsynced. A folder that exists under its final name is complete.
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, readPeftAdapter, writePeftAdapter } from "../adapters/peft.ts";
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from "../model/safetensors.ts";
import type { LlamaShape } from "../model/llama.ts";
import { syncDir } from "../util/fs.ts";
import type { TrainerState } from "./trainer.ts";

export const TRAINING_STATE = "training_state.safetensors";
const STATE_FORMAT = "qlora-training-state/1";

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

export interface CheckpointInfo {
  /** base_model_name_or_path */
  baseModel: string;
  /** Written into the state file's metadata (JSON) for the record. */
  hyperparameters?: Record<string, unknown>;
  /** Keep the optimizer state (for resume); false writes only the adapter (the final model). */
  withOptimizer: boolean;
}

async function fsyncFile(path: string): Promise<void> {
  const f = await Deno.open(path, { read: true, write: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

/** Writes the trainer's LoRA weights (and optimizer state) as a PEFT folder at `dir`, atomically. */
export async function writeCheckpoint(dir: string, state: TrainerState, info: CheckpointInfo): Promise<void> {
  const parent = dir.slice(0, dir.lastIndexOf("/")) || "/";
  const name = dir.slice(parent.length + 1);
  await Deno.mkdir(parent, { recursive: true });
  const tmp = `${parent}/.${name}.tmp-${crypto.randomUUID()}`;
  const spec = state.lora.spec;
  try {
    await writePeftAdapter(tmp, {
      r: spec.r,
      loraAlpha: spec.alpha,
      useRslora: spec.useRslora,
      baseModel: info.baseModel,
      weights: state.lora.pairs.map((p) => ({ layer: p.layer, module: p.module, a: p.A.readF32(), b: p.B.readF32() })),
      extraConfig: { lora_dropout: spec.dropout },
    });
    if (info.withOptimizer) {
      const tensors: TensorToWrite[] = [];
      state.slots.forEach(([ia, ib]) => {
        for (const i of [ia, ib]) {
          const n = state.optimizer.sizes[i];
          tensors.push({ name: `optimizer.${i}.m`, dtype: "F32", shape: [n], data: () => f32Bytes(state.optimizer.getState(i).m) });
          tensors.push({ name: `optimizer.${i}.v`, dtype: "F32", shape: [n], data: () => f32Bytes(state.optimizer.getState(i).v) });
        }
      });
      await writeSafetensors(`${tmp}/${TRAINING_STATE}`, tensors, {
        format: STATE_FORMAT,
        step: String(state.step),
        optimizer: state.optimizer.kind,
        slots: JSON.stringify(state.slots),
        hyperparameters: JSON.stringify(info.hyperparameters ?? {}),
      });
    }
    await fsyncFile(`${tmp}/${ADAPTER_CONFIG}`);
    await fsyncFile(`${tmp}/${ADAPTER_WEIGHTS}`);
    await syncDir(tmp);
    // a folder under the final name is complete (a resumed job rewrites the same step): replace it
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dir);
    await syncDir(parent);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

function f32Bytes(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** True when `dir` holds a complete checkpoint that can be resumed from. */
export async function isResumable(dir: string): Promise<boolean> {
  for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS, TRAINING_STATE]) {
    try {
      if (!(await Deno.stat(`${dir}/${f}`)).isFile) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** Loads a PEFT folder's LoRA weights into `lora` (same modules and rank, or CheckpointError):
 * how a resume starts, and how a job continues from a fine-tuned model. */
export async function loadLoraWeights(dir: string, lora: TrainerState["lora"], shape: LlamaShape): Promise<void> {
  const loaded = new Set<string>();
  try {
    await readPeftAdapter(dir, shape, (m, w) => {
      const p = lora.get(m.layer, m.module);
      if (!p) throw new CheckpointError(`the checkpoint has layer ${m.layer} ${m.module}, which the job does not train`);
      if (m.rank !== lora.spec.r) throw new CheckpointError(`the checkpoint has rank ${m.rank}, the job ${lora.spec.r}`);
      p.A.write(w.a);
      p.B.write(w.b);
      loaded.add(`${m.layer}.${m.module}`);
    });
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`cannot read the checkpoint's adapter: ${(e as Error).message}`);
  }
  if (loaded.size !== lora.pairs.length) {
    throw new CheckpointError(`the checkpoint has ${loaded.size} LoRA modules, the job ${lora.pairs.length}`);
  }
}

/**
 * Loads a checkpoint into a freshly made trainer (same model and hyperparameters): the LoRA
 * weights through the PEFT reader, the optimizer state and the step from the state file.
 * Returns the step. Throws CheckpointError when the folder does not fit the trainer.
 */
export async function loadCheckpoint(dir: string, state: TrainerState, shape: LlamaShape): Promise<number> {
  await loadLoraWeights(dir, state.lora, shape);
  let st: SafetensorsFile;
  try {
    st = await SafetensorsFile.open(`${dir}/${TRAINING_STATE}`);
  } catch (e) {
    throw new CheckpointError(`cannot read ${TRAINING_STATE}: ${(e as Error).message}`);
  }
  try {
    if (st.metadata.format !== STATE_FORMAT) {
      throw new CheckpointError(`${TRAINING_STATE} has format ${JSON.stringify(st.metadata.format)}`);
    }
    if (st.metadata.optimizer !== state.optimizer.kind) {
      throw new CheckpointError(`the checkpoint's optimizer is ${st.metadata.optimizer}, the job's ${state.optimizer.kind}`);
    }
    if (st.metadata.slots !== JSON.stringify(state.slots)) {
      throw new CheckpointError("the checkpoint's optimizer layout does not match the job's");
    }
    for (const [ia, ib] of state.slots) {
      for (const i of [ia, ib]) {
        const m = await st.readF32(`optimizer.${i}.m`), v = await st.readF32(`optimizer.${i}.v`);
        if (m.length !== state.optimizer.sizes[i] || v.length !== state.optimizer.sizes[i]) {
          throw new CheckpointError(`optimizer tensor ${i} has the wrong size`);
        }
        state.optimizer.setState(i, m, v);
      }
    }
    const step = Number(st.metadata.step);
    if (!Number.isInteger(step) || step < 0) throw new CheckpointError(`${TRAINING_STATE} has no valid step`);
    return step;
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`cannot read ${TRAINING_STATE}: ${(e as Error).message}`);
  } finally {
    st.close();
  }
}
