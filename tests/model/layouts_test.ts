// layouts_test.ts — model folders in other layouts load and compute the same function:
// bitsandbytes pre-quantized ("bnb-4bit") folders, sharded safetensors with an index,
// and Qwen2-style q/k/v biases (against the float64 reference).
import assert from "node:assert/strict";
import { openContext } from "../native/backends.ts";
import type { Context } from "../../server/ffi/tensor.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { loadModel, moduleWeightName } from "../../server/model/loader.ts";
import { bnbTensors } from "../../server/model/bnb.ts";
import { SafetensorsModel, type TensorToWrite, writeSafetensors } from "../../server/model/safetensors.ts";
import { type LlamaModel, LORA_MODULES } from "../../server/model/llama.ts";
import { loadReferenceWeights, referenceForward } from "./reference_llama.ts";
import { Rng } from "../native/rng.ts";

function lastLogits(model: LlamaModel, tokens: number[]): Float32Array {
  const cache = model.newKvCache(4, 16);
  try {
    const T = tokens.length;
    return model.forward({
      tokens: Int32Array.from(tokens),
      positions: Int32Array.from(tokens, (_, i) => i),
      slots: Int32Array.from(tokens, (_, i) => i),
      paged: { blockTables: Int32Array.of(0, 1, 2, 3), qStart: Int32Array.of(0, T), ctxLens: Int32Array.of(T), S: 1, maxBlocks: 4 },
      logitRows: Int32Array.of(T - 1),
    }, cache).slice();
  } finally {
    cache.dispose();
  }
}

async function copyDir(from: string, to: string, skip: string[]): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isFile && !skip.includes(e.name)) await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

const TOKENS = [1, 40, 41, 42, 100, 7, 8, 200, 201, 5];

/** Quantizes the model folder `src` at load (`quant`) and writes a copy in `dst` whose linear
 * weights are in bitsandbytes' serialized layout; returns the model quantized at load. */
async function writeBnbFolder(ctx: Context, src: string, dst: string, quant: "nf4" | "fp4"): Promise<LlamaModel> {
  const { model } = await loadModel(ctx, src, { quant });
  const st = await SafetensorsModel.open(src);
  const tensors: TensorToWrite[] = [];
  const linear = new Set<string>();
  model.layers.forEach((layer, l) => {
    for (const m of LORA_MODULES) {
      const name = `${moduleWeightName(l, m)}.weight`;
      linear.add(name);
      const w = layer.proj[m].weight;
      assert.equal(w.kind, "q4");
      if (w.kind === "q4") tensors.push(...bnbTensors(ctx, name, w.q, "float32"));
    }
  });
  for (const name of st.names) {
    if (linear.has(name)) continue;
    const info = st.info(name);
    tensors.push({ name, dtype: info.dtype, shape: info.shape, data: await st.read(name) });
  }
  st.close();
  await copyDir(src, dst, ["model.safetensors"]);
  await writeSafetensors(`${dst}/model.safetensors`, tensors);
  return model;
}

Deno.test("a bitsandbytes-format model folder (nf4 + double quant) loads to the same weights as quantizing at load", async () => {
  using ctx = openContext("cpu");
  const src = await Deno.makeTempDir(), bnbDir = await Deno.makeTempDir();
  try {
    await makeModel({ shape: "tiny", out: src, seed: 4, std: 0.1 });
    const model = await writeBnbFolder(ctx, src, bnbDir, "nf4");
    const pre = await loadModel(ctx, bnbDir, { quant: "nf4" });
    assert.ok(pre.prequantized);
    assert.equal(pre.quant, "nf4");
    const a = lastLogits(model, TOKENS), b = lastLogits(pre.model, TOKENS);
    assert.deepEqual(Array.from(b), Array.from(a));
    // and the serialized tensors are bitsandbytes' names and dtypes
    const written = await SafetensorsModel.open(bnbDir);
    const base = "model.layers.0.self_attn.q_proj.weight";
    assert.equal(written.info(base).dtype, "U8");
    assert.equal(written.info(`${base}.absmax`).dtype, "U8");
    assert.equal(written.info(`${base}.nested_absmax`).dtype, "F32");
    assert.deepEqual(written.info(`${base}.quant_map`).shape, [16]);
    assert.deepEqual(written.info(`${base}.nested_quant_map`).shape, [256]);
    const state = JSON.parse(new TextDecoder().decode(await written.read(`${base}.quant_state.bitsandbytes__nf4`)));
    assert.equal(state.quant_type, "nf4");
    assert.equal(state.blocksize, 64);
    assert.equal(state.nested_blocksize, 256);
    assert.equal(typeof state.nested_offset, "number");
    written.close();
    pre.model.dispose();
    model.dispose();
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(bnbDir, { recursive: true });
  }
});

Deno.test("a bitsandbytes fp4 model folder reports fp4 (whatever --quant says) and computes what fp4 at load does", async () => {
  using ctx = openContext("cpu");
  const src = await Deno.makeTempDir(), bnbDir = await Deno.makeTempDir();
  try {
    await makeModel({ shape: "tiny", out: src, seed: 6, std: 0.1 });
    const model = await writeBnbFolder(ctx, src, bnbDir, "fp4");
    const pre = await loadModel(ctx, bnbDir, { quant: "nf4" });
    assert.ok(pre.prequantized);
    assert.equal(pre.quant, "fp4");
    assert.deepEqual(Array.from(lastLogits(pre.model, TOKENS)), Array.from(lastLogits(model, TOKENS)));
    pre.model.dispose();
    model.dispose();
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(bnbDir, { recursive: true });
  }
});

Deno.test("sharded model folders (model.safetensors.index.json) load like a single file", async () => {
  using ctx = openContext("cpu");
  const src = await Deno.makeTempDir(), sharded = await Deno.makeTempDir();
  try {
    await makeModel({ shape: "tiny", out: src, seed: 5, std: 0.1 });
    const st = await SafetensorsModel.open(src);
    const names = st.names;
    const shards: TensorToWrite[][] = [[], []];
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < names.length; i++) {
      const info = st.info(names[i]);
      shards[i % 2].push({ name: names[i], dtype: info.dtype, shape: info.shape, data: await st.read(names[i]) });
      weightMap[names[i]] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
    }
    st.close();
    await copyDir(src, sharded, ["model.safetensors"]);
    await writeSafetensors(`${sharded}/model-00001-of-00002.safetensors`, shards[0]);
    await writeSafetensors(`${sharded}/model-00002-of-00002.safetensors`, shards[1]);
    await Deno.writeTextFile(`${sharded}/model.safetensors.index.json`, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const a = await loadModel(ctx, src, { quant: "none" }), b = await loadModel(ctx, sharded, { quant: "none" });
    assert.deepEqual(Array.from(lastLogits(b.model, TOKENS)), Array.from(lastLogits(a.model, TOKENS)));
    a.model.dispose();
    b.model.dispose();
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(sharded, { recursive: true });
  }
});

Deno.test("Qwen2-style q/k/v biases: logits agree with the float64 reference", async () => {
  using ctx = openContext("cpu");
  const dir = await Deno.makeTempDir();
  try {
    await makeModel({ shape: "tiny", out: dir, seed: 6, std: 0.1 });
    const cfgPath = `${dir}/config.json`;
    const cfg = JSON.parse(await Deno.readTextFile(cfgPath));
    cfg.architectures = ["Qwen2ForCausalLM"];
    cfg.model_type = "qwen2";
    await Deno.writeTextFile(cfgPath, JSON.stringify(cfg));
    const st = await SafetensorsModel.open(dir);
    const tensors: TensorToWrite[] = [];
    for (const name of st.names) {
      const info = st.info(name);
      tensors.push({ name, dtype: info.dtype, shape: info.shape, data: await st.read(name) });
    }
    st.close();
    const rng = new Rng(8);
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      for (const m of ["q_proj", "k_proj", "v_proj"]) {
        const rows = m === "q_proj" ? cfg.hidden_size : (cfg.hidden_size / cfg.num_attention_heads) * cfg.num_key_value_heads;
        const bias = rng.normalF32(rows, 0.5);
        tensors.push({ name: `model.layers.${l}.self_attn.${m}.bias`, dtype: "F32", shape: [rows], data: new Uint8Array(bias.buffer) });
      }
    }
    await writeSafetensors(`${dir}/model.safetensors`, tensors);
    const loaded = await loadModel(ctx, dir, { quant: "none" });
    assert.equal(loaded.config.architecture, "qwen2");
    const got = lastLogits(loaded.model, TOKENS);
    const ref = referenceForward(await loadReferenceWeights(dir, loaded.config), loaded.config, TOKENS);
    const V = loaded.config.vocabSize, T = TOKENS.length;
    let maxErr = 0, scale = 0;
    for (let v = 0; v < V; v++) {
      maxErr = Math.max(maxErr, Math.abs(got[v] - ref[(T - 1) * V + v]));
      scale = Math.max(scale, Math.abs(ref[(T - 1) * V + v]));
    }
    assert.ok(maxErr <= 1e-4 * Math.max(1, scale), `max |Δlogit| ${maxErr} (scale ${scale})`);
    loaded.model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
