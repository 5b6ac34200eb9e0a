// make_model_test.ts — the generated tiny model is accepted by every reader and is deterministic.
import assert from "node:assert/strict";
import { makeModel } from "../../server/model/make_model.ts";
import { loadModelConfig } from "../../server/model/config.ts";
import { SafetensorsModel } from "../../server/model/safetensors.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { applyChatTemplate, renderChatTemplate } from "../../server/model/chat_template.ts";
import { loadGenerationConfig } from "../../server/model/generation_config.ts";

Deno.test("make_model tiny: readers accept the folder; same seed → same bytes", async () => {
  const a = await Deno.makeTempDir();
  const b = await Deno.makeTempDir();
  const c = await Deno.makeTempDir();
  try {
    await makeModel({ shape: "tiny", out: a, seed: 3 });
    await makeModel({ shape: "tiny", out: b, seed: 3 });
    await makeModel({ shape: "tiny", out: c, seed: 4, dtype: "bf16" });
    for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors"]) {
      assert.deepEqual(await Deno.readFile(`${a}/${f}`), await Deno.readFile(`${b}/${f}`), f);
    }
    const cfg = await loadModelConfig(a);
    assert.ok(cfg.hiddenSize >= 64 && cfg.hiddenSize <= 128);
    assert.ok(cfg.numKvHeads < cfg.numHeads, "GQA");
    assert.ok(cfg.vocabSize >= 300 && cfg.vocabSize <= 1000);
    const tok = await Tokenizer.load(a);
    assert.ok(tok.vocabSize <= cfg.vocabSize);
    for (const text of ["Once upon a time, Bolt said hi.", "naïve café 😀 — 日本", "def f(x):\n    return x\n"]) {
      const ids = tok.encode(text);
      assert.equal(ids[0], tok.bosTokenId);
      assert.ok(ids.every((id) => id < cfg.vocabSize));
      assert.equal(tok.decode(ids), text);
    }
    assert.ok(tok.encode("Once upon a time").length < 10, "merges make common words short");
    const prompt = renderChatTemplate(tok.chatTemplate, [{ role: "user", content: "hi" }], { bosToken: tok.bosToken });
    assert.equal(prompt, "<|begin_of_text|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    const ids = tok.encode(prompt, { addSpecialTokens: false });
    assert.equal(ids.filter((id) => tok.isSpecial(id)).length, 4);
    const applied = applyChatTemplate(tok, [{ role: "user", content: "hi" }]);
    assert.equal(applied.text, prompt);
    assert.deepEqual(applied.ids, ids);
    assert.equal(applied.ids.filter((id) => id === tok.bosTokenId).length, 1, "BOS once");
    const gen = await loadGenerationConfig(a);
    assert.deepEqual(gen.eosTokenIds, cfg.eosTokenIds);
    assert.ok(gen.eosTokenIds.includes(tok.tokenToId("<|im_end|>")!));

    const w = await SafetensorsModel.open(a);
    try {
      const H = cfg.hiddenSize, D = cfg.headDim;
      assert.deepEqual(w.info("model.embed_tokens.weight").shape, [cfg.vocabSize, H]);
      assert.deepEqual(w.info("model.layers.0.self_attn.k_proj.weight").shape, [cfg.numKvHeads * D, H]);
      assert.deepEqual(w.info(`model.layers.${cfg.numLayers - 1}.mlp.down_proj.weight`).shape, [H, cfg.intermediateSize]);
      assert.equal(w.has("lm_head.weight"), !cfg.tieWordEmbeddings);
      assert.equal(w.names.length, 2 + 9 * cfg.numLayers + (cfg.tieWordEmbeddings ? 0 : 1));
      const q = await w.readF32("model.layers.0.self_attn.q_proj.weight");
      let s = 0, s2 = 0;
      for (const v of q) {
        s += v;
        s2 += v * v;
      }
      const std = Math.sqrt(s2 / q.length - (s / q.length) ** 2);
      assert.ok(Math.abs(std - 0.02) < 0.002, `std ${std}`);
      assert.deepEqual([...await w.readF32("model.norm.weight")], new Array(H).fill(1));
    } finally {
      w.close();
    }
    const wb = await SafetensorsModel.open(c);
    try {
      assert.equal(wb.info("model.embed_tokens.weight").dtype, "BF16");
      const e = await wb.readF32("model.embed_tokens.weight");
      assert.ok(e.every((v) => Number.isFinite(v) && Math.abs(v) < 0.2));
    } finally {
      wb.close();
    }
  } finally {
    for (const d of [a, b, c]) await Deno.remove(d, { recursive: true });
  }
});
