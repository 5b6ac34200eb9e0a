// dataset_test.ts — tokenization of fine-tuning examples on a real SentencePiece tokenizer
// (stories260K): what is learned is exactly the text generation would produce.
import assert from "node:assert/strict";
import { STORIES } from "../helpers.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { parseJsonl, tokenizeExample } from "../../server/training/dataset.ts";

Deno.test("prompt/completion: the completion is tokenized with its prompt (no dummy-prefix space), loss on the completion only", async () => {
  const tok = await Tokenizer.load(STORIES);
  const [ex] = parseJsonl(JSON.stringify({ prompt: "Tom and Ben", completion: " were playing in the park." }));
  const t = tokenizeExample(tok, ex, { eosTokenId: 2 });
  const whole = tok.encode("Tom and Ben were playing in the park.", { addSpecialTokens: true });
  assert.deepEqual(t.ids, [...whole, 2], "the example is the whole text as generation sees it, then EOS");
  const learned = t.ids.filter((_, i) => t.weights[i] > 0);
  // the learned tokens decode to the completion with exactly one leading space
  assert.equal(tok.decode(learned.slice(0, -1)), " were playing in the park.".trimStart());
  const firstLearned = t.weights.findIndex((w) => w > 0);
  assert.equal(tok.decode(t.ids.slice(0, firstLearned), { skipSpecialTokens: true }), "Tom and Ben");
  // the old bug: encoding the completion alone adds a dummy-prefix token (two spaces when decoded after the prompt)
  const alone = tok.encode(" were playing in the park.", { addSpecialTokens: false });
  assert.notDeepEqual(alone, t.ids.slice(firstLearned, -1), "the completion alone tokenizes differently (the bug this guards)");
  const withInputs = tokenizeExample(tok, ex, { trainOnInputs: true });
  assert.equal(withInputs.weights[0], 0);
  assert.ok(withInputs.weights.slice(1).every((w) => w === 1));
});

const ex = (n: number, tag: number): { ids: number[]; weights: number[] } => ({
  ids: Array.from({ length: n }, () => tag),
  weights: Array.from({ length: n }, (_, i) => (i === 0 ? 0 : 1)),
});

Deno.test("makeSteps: a step is batch_size examples (OpenAI's meaning); packing only cuts a step into micro-batches", async () => {
  const { makeSteps, lossTokenCount } = await import("../../server/training/dataset.ts");
  const len64 = (e: { ids: number[] }) => Math.min(e.ids.length, 64);
  // 32 short examples at batch_size 4: 8 steps an epoch, whatever the sequence length
  const short = Array.from({ length: 32 }, (_, i) => ex(12, i));
  const steps = makeSteps(short, 4, len64, { microBatchTokens: 256 });
  assert.equal(steps.length, 8);
  for (const s of steps) assert.deepEqual(s.flat().length, 4);
  assert.deepEqual(steps.flat(2).map((e) => e.ids[0]), short.map((e) => e.ids[0]), "order kept, every example once");
  // long examples: a step is cut into micro-batches within the token budget, examples stay whole
  const long = Array.from({ length: 6 }, (_, i) => ex(100, i));
  const cut = makeSteps(long, 4, len64, { microBatchTokens: 128 });
  assert.equal(cut.length, 2, "6 examples at batch 4: a full step and a last step of 2");
  assert.deepEqual(cut.map((s) => s.map((m) => m.length)), [[2, 2], [2]], "64-token (truncated) examples, 128 tokens a micro-batch");
  // at least minMicroBatches micro-batches per step (gradient accumulation as a memory knob)
  const split = makeSteps(short.slice(0, 8), 8, len64, { microBatchTokens: 10_000, minMicroBatches: 4 });
  assert.deepEqual(split.map((s) => s.map((m) => m.length)), [[2, 2, 2, 2]]);
  assert.equal(lossTokenCount([ex(12, 0), ex(100, 1)], 64), 11 + 63);
});

Deno.test("preference examples (OpenAI's DPO format): validated with the line named; pairs learn only the final turns", async () => {
  const { tokenizePair, exampleMethod } = await import("../../server/training/dataset.ts");
  const { makeModel } = await import("../../server/model/make_model.ts");
  const dir = await Deno.makeTempDir();
  await makeModel({ shape: "tiny", out: dir }); // a byte-level BPE tokenizer with a chat template
  const tok = await Tokenizer.load(dir);
  await Deno.remove(dir, { recursive: true });
  const line = {
    input: { messages: [{ role: "user", content: "Once upon a time" }], tools: [], parallel_tool_calls: true },
    preferred_output: [{ role: "assistant", content: "there was a little girl." }],
    non_preferred_output: [{ role: "assistant", content: "no." }],
  };
  const [ex] = parseJsonl(JSON.stringify(line));
  assert.equal(exampleMethod(ex), "dpo");
  const pair = tokenizePair(tok, ex, { eosTokenId: 2 });
  const learned = (t: { ids: number[]; weights: number[] }) => t.ids.filter((_, i) => t.weights[i] > 0);
  // the final turn's text and the template's end of turn (a newline in this template)
  assert.equal(tok.decode(learned(pair.chosen)), "there was a little girl.\n");
  assert.equal(tok.decode(learned(pair.rejected)), "no.\n");
  const firstChosen = pair.chosen.weights.findIndex((w) => w > 0), firstRejected = pair.rejected.weights.findIndex((w) => w > 0);
  assert.deepEqual(pair.chosen.ids.slice(0, firstChosen), pair.rejected.ids.slice(0, firstRejected), "one shared prompt");
  assert.throws(() => tokenizeExample(tok, ex), /DPO/);
  for (
    const [bad, msg] of [
      [{ ...line, input: [] }, /line 1: "input" must be an object/],
      [{ ...line, preferred_output: [] }, /line 1: "preferred_output" must be a non-empty array/],
      [{ ...line, non_preferred_output: [{ role: "user", content: "x" }] }, /line 1: non_preferred_output\[0\].role must be assistant/],
      [{ ...line, input: { messages: [{ role: "user", content: 3 }] } }, /line 1: input.messages\[0\].content must be a string/],
    ] as const
  ) assert.throws(() => parseJsonl(JSON.stringify(bad)), msg);
});

Deno.test("chat tokenization is linear: a 200-message, 350 KB line in seconds, token for token what tokenizing every prefix gives", async () => {
  const { tokenizeChatByPrefixes } = await import("../../server/training/dataset.ts");
  const { makeModel } = await import("../../server/model/make_model.ts");
  const dir = await Deno.makeTempDir();
  await makeModel({ shape: "tiny", out: dir }); // byte-level BPE, ChatML
  const models = [dir, new URL("../../models/stories260K", import.meta.url).pathname]; // SentencePiece, a story template
  try {
    for (const m of models) {
      const tok = await Tokenizer.load(m);
      const chats = [
        [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello there." }],
        [
          { role: "user", content: "Once upon a time" },
          { role: "assistant", content: "there was a cat.", weight: 0 },
          { role: "user", content: "Then?" },
          { role: "assistant", content: "It slept. Ünïcödé, 日本." },
        ],
      ];
      for (const messages of chats) {
        const [ex] = parseJsonl(JSON.stringify({ messages }));
        for (const trainOnInputs of [false, true]) {
          assert.deepEqual(
            tokenizeExample(tok, ex, { trainOnInputs }),
            tokenizeChatByPrefixes(tok, messages, trainOnInputs),
            `${m}: ${JSON.stringify(messages).slice(0, 60)}`,
          );
        }
      }
      const long = Array.from({ length: 200 }, (_, i) => ({
        role: i % 2 ? "assistant" : "user",
        content: `Message ${i}: ` + "the quick brown fox jumps over the lazy dog. ".repeat(38),
      }));
      const line = JSON.stringify({ messages: long });
      assert.ok(line.length > 340_000);
      const t0 = performance.now();
      const t = tokenizeExample(tok, parseJsonl(line)[0]);
      const ms = performance.now() - t0;
      // tokenizing every prefix took ~30 s for this line; the whole conversation once, well under a second here
      assert.ok(ms < 10_000, `${m}: ${ms.toFixed(0)} ms`);
      assert.equal(t.ids.length, t.weights.length);
      assert.ok(t.weights.filter((w) => w > 0).length > t.ids.length / 3, "the assistant half of the tokens learns");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
