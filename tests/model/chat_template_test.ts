// chat_template_test.ts — chat templates and generation_config defaults.
import assert from "node:assert/strict";
import { ChatTemplateError, renderChatTemplate } from "../../server/model/chat_template.ts";
import { GenerationConfigError, loadGenerationConfig, parseGenerationConfig } from "../../server/model/generation_config.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";

import { STORIES_DIR as STORIES } from "../fixtures.ts";

const LLAMA3_TEMPLATE = "{{- bos_token }}{%- for message in messages %}" +
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}" +
  "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

Deno.test("renders a Llama-3 style template with bos_token and the generation prompt", () => {
  const out = renderChatTemplate(LLAMA3_TEMPLATE, [{ role: "system", content: "Be brief." }, { role: "user", content: " Hi! " }], {
    bosToken: "<|begin_of_text|>",
  });
  assert.equal(
    out,
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  );
  const noGen = renderChatTemplate(LLAMA3_TEMPLATE, [{ role: "user", content: "x" }], { addGenerationPrompt: false });
  assert.ok(noGen.endsWith("<|eot_id|>"));
});

Deno.test("a model without a template gets a clear error; template errors are ChatTemplateErrors", async () => {
  const tok = await Tokenizer.load(STORIES);
  assert.throws(() => renderChatTemplate(tok.chatTemplate, [{ role: "user", content: "hi" }]), /no chat template/);
  assert.throws(() => renderChatTemplate("{% if %}", []), ChatTemplateError);
  assert.throws(
    () =>
      renderChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}", [{
        role: "assistant",
        content: "",
      }]),
    /Conversation must start with user/,
  );
});

Deno.test("chat_template.jinja overrides tokenizer_config's template", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) await Deno.copyFile(`${STORIES}/${f}`, `${dir}/${f}`);
    await Deno.writeTextFile(`${dir}/chat_template.jinja`, "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}");
    const tok = await Tokenizer.load(dir);
    assert.equal(renderChatTemplate(tok.chatTemplate, [{ role: "user", content: "hi" }]), "[user] hi\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generation_config.json: stories260K, lists, sampling defaults, errors", async () => {
  const g = await loadGenerationConfig(STORIES);
  assert.deepEqual(g.eosTokenIds, [2]);
  assert.equal(g.bosTokenId, 1);
  assert.equal(g.maxLength, 512);
  const l = parseGenerationConfig({ eos_token_id: [128001, 128008, 128009], temperature: 0.6, top_p: 0.9, do_sample: true });
  assert.deepEqual(l.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(l.temperature, 0.6);
  assert.equal(l.topP, 0.9);
  assert.equal(l.doSample, true);
  assert.equal(l.topK, undefined);
  assert.throws(() => parseGenerationConfig({ top_p: 2 }), GenerationConfigError);
  assert.throws(() => parseGenerationConfig({ eos_token_id: "x" }), /eos_token_id/);
  const missing = await loadGenerationConfig("/nonexistent-dir-for-test", [7]);
  assert.deepEqual(missing.eosTokenIds, [7]);
});
