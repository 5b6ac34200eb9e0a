// dataset_test.ts — tokenization of fine-tuning examples on a real SentencePiece tokenizer
// (stories260K): what is learned is exactly the text generation would produce.
import assert from "node:assert/strict";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { parseJsonl, tokenizeExample } from "../../server/training/dataset.ts";

const STORIES = new URL("../../../shared/models/stories260K", import.meta.url).pathname;

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
