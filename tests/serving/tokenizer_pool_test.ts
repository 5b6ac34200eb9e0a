// tokenizer_pool_test.ts — prompts are tokenized off the HTTP thread, with the model's own
// tokenizer (same ids as inline), fairly: one tenant's big prompts never hold every worker, so
// another tenant's small prompt is tokenized while they run; a job whose request went away while it
// waited is dropped; template errors come back as ChatTemplateError; uploaded JSONL is validated
// here too (DatasetError naming the line).
import assert from "node:assert/strict";
import { TokenizerPool } from "../../server/serving/tokenizer_pool.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { ChatTemplateError, renderChatTemplate } from "../../server/model/chat_template.ts";
import { DatasetError } from "../../server/training/dataset.ts";
import { secretWordJsonl, STORIES, tinyModel } from "../helpers.ts";

const PROSE = "Once upon a time there was a little cat who liked to play in the sun. ";

Deno.test({
  name: "tokenizer pool: same ids as the tokenizer inline, for text and chat",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await tinyModel();
    const pool = await TokenizerPool.start(dir, 2);
    try {
      const tok = await Tokenizer.load(dir);
      for (const [text, special] of [["Once upon a time", true], [PROSE.repeat(20), false], ["", true]] as const) {
        assert.deepEqual(await pool.encode("t", text, special), tok.encode(text, { addSpecialTokens: special }));
      }
      const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello there" }];
      const text = renderChatTemplate(tok.chatTemplate, messages, { bosToken: tok.bosToken, eosToken: tok.eosToken });
      const ids = await pool.run("t", {
        t: "chat",
        template: tok.chatTemplate!,
        messages,
        addGenerationPrompt: true,
        addSpecialTokens: false,
      });
      assert.deepEqual(ids, tok.encode(text, { addSpecialTokens: false }));
      await assert.rejects(
        pool.run("t", {
          t: "chat",
          template: "{{ raise_exception('no system messages') }}",
          messages,
          addGenerationPrompt: true,
          addSpecialTokens: false,
        }),
        (e) => e instanceof ChatTemplateError && /no system messages/.test(e.message),
      );
      // uploaded fine-tuning files are validated here too
      assert.deepEqual(await pool.validateJsonl("t", secretWordJsonl(3), 100), { examples: 4, kinds: ["chat"] });
      await assert.rejects(
        pool.validateJsonl("t", secretWordJsonl(1) + "{not json\n", 100),
        (e) => e instanceof DatasetError && /^line 3: /.test(e.message),
      );
    } finally {
      pool.close();
    }
  },
});

Deno.test({
  name: "tokenizer pool: a tenant's flood of big prompts keeps one worker free for the others; aborted waiting jobs are dropped",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const pool = await TokenizerPool.start(STORIES, 2);
    try {
      const big = PROSE.repeat(2500); // ~180,000 characters: a second or more of tokenizing here
      const t0 = performance.now();
      const flood = Array.from({ length: 4 }, () => pool.encode("a", big, true));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(pool.load.busy, 1, "tenant a holds one of the two workers, not both");
      const t1 = performance.now();
      const small = await pool.encode("b", "Once upon a time", true);
      const smallMs = performance.now() - t1;
      assert.ok(small.length > 0);
      // one big prompt's tokenizing time, for scale: b must not have waited for it
      const firstBig = await flood[0];
      const bigMs = performance.now() - t0;
      assert.ok(firstBig.length > 10_000);
      console.log(`tenant b's prompt: ${smallMs.toFixed(1)} ms while tenant a's big prompt took ${bigMs.toFixed(0)} ms`);
      assert.ok(smallMs < bigMs / 4, `b waited ${smallMs.toFixed(0)} ms (a's prompt: ${bigMs.toFixed(0)} ms)`);
      // a job whose request is gone is not run
      const ac = new AbortController();
      const gone = pool.encode("a", big, true, ac.signal);
      ac.abort();
      await assert.rejects(gone, (e) => e instanceof DOMException && e.name === "AbortError");
      for (const f of flood) f.catch(() => {}); // the rest of the flood ends with the pool
    } finally {
      pool.close();
    }
  },
});
