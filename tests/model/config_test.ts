// config_test.ts — config.json parsing for the supported families, and RoPE scaling.
import assert from "node:assert/strict";
import { ConfigError, loadModelConfig, parseModelConfig, ropeInvFreq } from "../../server/model/config.ts";

import { STORIES_DIR as STORIES } from "../fixtures.ts";

const LLAMA2_7B = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 4096,
  intermediate_size: 11008,
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  vocab_size: 32000,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  torch_dtype: "float16",
};

const LLAMA31_8B = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
};

const MISTRAL_7B = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  vocab_size: 32768,
};

const QWEN2_05B = {
  architectures: ["Qwen2ForCausalLM"],
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: "silu",
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

Deno.test("Llama 2 7B", () => {
  const c = parseModelConfig(LLAMA2_7B);
  assert.equal(c.architecture, "llama");
  assert.equal(c.headDim, 128);
  assert.equal(c.numKvHeads, 32);
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.ropeScaling, { type: "default" });
  assert.deepEqual(c.eosTokenIds, [2]);
  assert.equal(c.bosTokenId, 1);
  assert.equal(c.attentionBias, false);
  assert.equal(c.tieWordEmbeddings, false);
  const f = ropeInvFreq(c);
  assert.equal(f.length, 64);
  assert.equal(f[0], 1);
  assert.ok(Math.abs(f[32] - 0.01) < 1e-9, `${f[32]}`); // 10000^(-64/128) = 1/100
});

Deno.test("num_key_value_heads defaults to num_attention_heads", () => {
  const { num_key_value_heads: _, ...noKv } = LLAMA2_7B;
  assert.equal(parseModelConfig(noKv).numKvHeads, 32);
});

Deno.test("Llama 3.1 8B: llama3 rope scaling matches hand-computed values", () => {
  const c = parseModelConfig(LLAMA31_8B);
  assert.equal(c.numKvHeads, 8);
  assert.deepEqual(c.eosTokenIds, [128001, 128008, 128009]);
  assert.deepEqual(c.ropeScaling, { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  const f = ropeInvFreq(c);
  assert.equal(f.length, 64);
  // i=32: base^(-64/128) = 1/sqrt(500000) = 0.00141421…; wavelen = 2π/f = 4442.88 lies between
  // 8192/4 and 8192/1, so smooth = (8192/4442.88 − 1)/(4 − 1) = 0.28130 and
  // f' = (1 − smooth)·f/8 + smooth·f = 0.000524846.
  const f32 = Math.fround(0.0005248461609929547);
  const expected: Array<[number, number]> = [
    [0, 1.0], // high frequency: unchanged
    [28, 0.0032114459947525913], // wavelen 1956 < 2048: unchanged
    [29, 0.002166570763503359], // smooth
    [32, f32],
    [34, 0.00017850781276799638], // smooth
    [35, 9.556212353964683e-05], // wavelen 8218 > 8192: divided by 8
    [63, 3.068925988914511e-07],
  ];
  for (const [i, v] of expected) assert.ok(Math.abs(f[i] - v) <= 1e-6 * v, `inv_freq[${i}] = ${f[i]}, expected ${v}`);
});

Deno.test("linear rope scaling and rope_parameters form", () => {
  const c = parseModelConfig({ ...LLAMA2_7B, rope_scaling: { type: "linear", factor: 4 } });
  assert.deepEqual(c.ropeScaling, { type: "linear", factor: 4 });
  assert.ok(Math.abs(ropeInvFreq(c)[32] - 0.0025) < 1e-9);
  const { rope_scaling: _, rope_theta: __, ...rest } = LLAMA31_8B;
  const d = parseModelConfig({ ...rest, rope_parameters: { ...LLAMA31_8B.rope_scaling, rope_theta: 500000 } });
  assert.equal(d.ropeTheta, 500000);
  assert.equal(d.ropeScaling.type, "llama3");
  const e = parseModelConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: "default" } });
  assert.deepEqual(e.ropeScaling, { type: "default" });
  assert.throws(
    () => parseModelConfig({ ...LLAMA2_7B, rope_scaling: { type: "yarn", factor: 4 } }),
    /unsupported rope scaling type "yarn"/,
  );
});

Deno.test("Mistral 7B", () => {
  const c = parseModelConfig(MISTRAL_7B);
  assert.equal(c.architecture, "mistral");
  assert.equal(c.headDim, 128);
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.ropeTheta, 1e6);
  assert.equal(c.slidingWindow, null);
  assert.equal(c.vocabSize, 32768);
  // Explicit head_dim (Mistral NeMo style: hidden 5120, 32 heads, head_dim 128).
  const n = parseModelConfig({ ...MISTRAL_7B, hidden_size: 5120, head_dim: 128 });
  assert.equal(n.headDim, 128);
});

Deno.test("Qwen2 0.5B: qkv biases, tied embeddings", () => {
  const c = parseModelConfig(QWEN2_05B);
  assert.equal(c.architecture, "qwen2");
  assert.equal(c.attentionBias, true);
  assert.equal(c.oProjBias, false);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.headDim, 64);
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.slidingWindow, null, "use_sliding_window false");
  assert.deepEqual(c.eosTokenIds, [151645]);
});

Deno.test("stories260K config.json", async () => {
  const c = await loadModelConfig(STORIES);
  assert.equal(c.hiddenSize, 64);
  assert.equal(c.headDim, 8);
  assert.equal(c.numKvHeads, 4);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.vocabSize, 512);
  assert.equal(ropeInvFreq(c).length, 4);
});

Deno.test("clear errors: unsupported architecture, missing fields, bad values", () => {
  const err = (cfg: unknown, re: RegExp) =>
    assert.throws(() => parseModelConfig(cfg), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match((e as Error).message, re);
      return true;
    });
  err({ ...LLAMA2_7B, architectures: ["GPT2LMHeadModel"] }, /unsupported architecture "GPT2LMHeadModel"/);
  const { hidden_size: _h, ...noHidden } = LLAMA2_7B;
  err(noHidden, /missing required field "hidden_size"/);
  const { vocab_size: _v, ...noVocab } = LLAMA2_7B;
  err(noVocab, /"vocab_size"/);
  err({ ...LLAMA2_7B, num_key_value_heads: 5 }, /multiple of num_key_value_heads/);
  err({ ...LLAMA2_7B, hidden_act: "gelu" }, /hidden_act/);
  err({ ...LLAMA2_7B, num_hidden_layers: "32" }, /must be an integer/);
  err([], /JSON object/);
  err({ hidden_size: 4 }, /neither "architectures" nor "model_type"/);
});
