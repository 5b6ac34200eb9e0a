// peft_test.ts — reading and writing adapters in PEFT's format: round trip, scales (rsLoRA),
// ".default" keys, and the errors for truncated or mismatched files.
import assert from "node:assert/strict";
import { inspectPeftAdapter, loraScale, parsePeftConfig, PeftError, peftKey, readPeftAdapter } from "../../server/adapters/peft.ts";
import { f32Tensor, writeSafetensors } from "../../server/model/safetensors.ts";
import { makeAdapter, STORIES_SHAPE } from "../helpers.ts";

Deno.test("PEFT adapters round-trip with PEFT's key names, shapes and scales", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeAdapter(dir, STORIES_SHAPE, { seed: 3, r: 2, modules: ["q_proj", "down_proj"] });
    assert.equal(peftKey(0, "q_proj", "A"), "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    assert.equal(peftKey(1, "down_proj", "B"), "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
    assert.deepEqual(cfg.target_modules, ["q_proj", "down_proj"]);
    const info = await inspectPeftAdapter(dir, STORIES_SHAPE);
    assert.equal(info.modules.length, STORIES_SHAPE.layers * 2);
    assert.deepEqual(info.moduleNames, ["q_proj", "down_proj"]);
    const seen: number[] = [];
    await readPeftAdapter(dir, STORIES_SHAPE, (m, w) => {
      assert.equal(w.a.length, m.rank * m.in);
      assert.equal(w.b.length, m.out * m.rank);
      assert.equal(m.scale, 1);
      seen.push(m.layer);
    });
    assert.equal(seen.length, info.modules.length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PEFT config: scale alpha/r or alpha/sqrt(r) with rsLoRA; all-linear; bad configs are PeftErrors", () => {
  assert.equal(loraScale(16, 4, false), 4);
  assert.equal(loraScale(16, 4, true), 8);
  const c = parsePeftConfig({ r: 8, lora_alpha: 16, target_modules: "all-linear", use_rslora: true, base_model_name_or_path: "m" });
  assert.equal(c.targetModules, "all-linear");
  assert.equal(c.useRslora, true);
  assert.throws(() => parsePeftConfig({ r: 0 }), PeftError);
  assert.throws(() => parsePeftConfig({ r: 4, use_dora: true, target_modules: ["q_proj"] }), PeftError);
  assert.throws(() => parsePeftConfig({ r: 4, target_modules: ["lm_head"] }), PeftError);
  assert.throws(() => parsePeftConfig([]), PeftError);
});

Deno.test("PEFT reader: '.default' keys accepted; truncated, mis-shaped and foreign tensors rejected", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const S = STORIES_SHAPE, r = 2;
    await Deno.writeTextFile(
      `${dir}/adapter_config.json`,
      JSON.stringify({ peft_type: "LORA", r, lora_alpha: 4, target_modules: ["v_proj"] }),
    );
    const kv = S.kvHeads * S.headDim;
    await writeSafetensors(`${dir}/adapter_model.safetensors`, [
      f32Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_A.default.weight", [r, S.hidden], new Float32Array(r * S.hidden)),
      f32Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight", [kv, r], new Float32Array(kv * r)),
    ]);
    const info = await inspectPeftAdapter(dir, S);
    assert.equal(info.modules[0].scale, 2);
    // truncated weights
    const bytes = await Deno.readFile(`${dir}/adapter_model.safetensors`);
    await Deno.writeFile(`${dir}/adapter_model.safetensors`, bytes.subarray(0, bytes.length - 7));
    await assert.rejects(inspectPeftAdapter(dir, S), PeftError);
    // wrong shape
    await writeSafetensors(`${dir}/adapter_model.safetensors`, [
      f32Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", [r, S.hidden + 1], new Float32Array(r * (S.hidden + 1))),
      f32Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", [kv, r], new Float32Array(kv * r)),
    ]);
    await assert.rejects(inspectPeftAdapter(dir, S), /lora_A is/);
    // a layer the model does not have, a foreign tensor, a missing B
    for (
      const tensors of [
        [f32Tensor(
          `base_model.model.model.layers.${S.layers}.self_attn.v_proj.lora_A.weight`,
          [r, S.hidden],
          new Float32Array(r * S.hidden),
        )],
        [f32Tensor("lm_head.weight", [2, 2], new Float32Array(4))],
        [f32Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", [r, S.hidden], new Float32Array(r * S.hidden))],
      ]
    ) {
      await writeSafetensors(`${dir}/adapter_model.safetensors`, tensors);
      await assert.rejects(inspectPeftAdapter(dir, S), PeftError);
    }
    // missing files / invalid JSON
    await Deno.writeTextFile(`${dir}/adapter_config.json`, "{nope");
    await assert.rejects(inspectPeftAdapter(dir, S), /not valid JSON/);
    await Deno.remove(`${dir}/adapter_config.json`);
    await assert.rejects(inspectPeftAdapter(dir, S), /missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
