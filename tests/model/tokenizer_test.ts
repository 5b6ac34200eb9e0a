// tokenizer_test.ts — stories260K tokenizer against llama2.c's reference generations.
import assert from "node:assert/strict";
import { Tokenizer } from "../../server/model/tokenizer.ts";

import { STORIES_DIR as DIR } from "../fixtures.ts";
const REF = JSON.parse(Deno.readTextFileSync(`${DIR}/reference_greedy.json`)) as {
  cases: Array<{ prompt: string; prompt_ids: number[]; generated_ids: number[]; full_text: string }>;
};

Deno.test("stories260K: prompt_ids and full_text match reference_greedy.json", async () => {
  const tok = await Tokenizer.load(DIR);
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.addsBos, true);
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.chatTemplate, null);
  for (const c of REF.cases) {
    assert.deepEqual(tok.encode(c.prompt), c.prompt_ids, c.prompt);
    assert.deepEqual(tok.encode(c.prompt, { addSpecialTokens: false }), c.prompt_ids.slice(1));
    assert.equal(tok.decode([...c.prompt_ids, ...c.generated_ids]), c.full_text);
    assert.equal(tok.decode(c.prompt_ids), c.prompt);
    // Re-encoding the full text gives back a token sequence that decodes to the same text.
    assert.equal(tok.decode(tok.encode(c.full_text)), c.full_text);
  }
});

Deno.test("stories260K: byte fallback round-trips any text", async () => {
  const tok = await Tokenizer.load(DIR);
  for (const text of ["héllo wörld", "emoji 😀 ✓ ∑", "tabs\tand\nnewlines  double  spaces", "日本語のテキスト", " leading space", ""]) {
    const ids = tok.encode(text);
    assert.equal(tok.decode(ids), text, JSON.stringify(text));
  }
  const ids = tok.encode("✓");
  assert.ok(ids.some((id) => tok.idToToken(id) === "<0xE2>"), JSON.stringify(ids.map((i) => tok.idToToken(i))));
  assert.deepEqual([...tok.tokenBytes(tok.tokenToId("<0xE2>")!)], [0xe2]);
  assert.deepEqual(new TextDecoder().decode(tok.tokenBytes(tok.tokenToId("▁Once")!)), " Once");
});

Deno.test("stories260K: special tokens kept or skipped on decode", async () => {
  const tok = await Tokenizer.load(DIR);
  assert.equal(tok.decode([1, 403, 407, 2], { skipSpecialTokens: false }), "<s> Once upon</s>");
  assert.equal(tok.decode([1, 403, 407, 2]), "Once upon");
  assert.ok(tok.isSpecial(1) && tok.isSpecial(2) && !tok.isSpecial(403));
});

Deno.test("Llama tokenizer classes follow add_bos_token / add_eos_token like transformers", async () => {
  const tokenizerJson = JSON.parse(await Deno.readTextFile(`${DIR}/tokenizer.json`));
  const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/tokenizer_config.json`));
  const noBos = new Tokenizer({ tokenizerJson, tokenizerConfig: { ...cfg, add_bos_token: false } });
  assert.deepEqual(noBos.encode("Once upon a time"), [403, 407, 261, 378]);
  assert.equal(noBos.addsBos, false);
  const withEos = new Tokenizer({ tokenizerJson, tokenizerConfig: { ...cfg, add_eos_token: true } });
  assert.deepEqual(withEos.encode("Once upon a time"), [1, 403, 407, 261, 378, 2]);
  assert.deepEqual(withEos.encode("Once", { addSpecialTokens: false }), [403]);
});
