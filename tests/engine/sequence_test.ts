// sequence_test.ts — Sequence bookkeeping and token-level stop conditions.
import assert from "node:assert/strict";
import { Sequence } from "../../server/engine/sequence.ts";
import { BlockManager } from "../../server/engine/kv_blocks.ts";

Deno.test("sequence: lengths, EOS, max tokens, min tokens, ignore_eos, adapter salt", () => {
  const s = new Sequence({ promptIds: [1, 5, 6], stopping: { maxTokens: 3, stopTokenIds: [2] }, adapterUid: "a1", sampling: { seed: 1 } });
  assert.equal(s.promptLength, 3);
  assert.equal(s.status, "waiting");
  assert.equal(s.cacheSalt, "a1");
  s.appendToken(9);
  assert.equal(s.checkStop(100), false);
  s.appendToken(2);
  assert.equal(s.checkStop(100), true);
  assert.equal(s.finishReason, "stop");
  assert.equal(s.stopReason, 2);
  assert.deepEqual(s.outputIds, [9, 2]);

  const t = new Sequence({ promptIds: [1], stopping: { maxTokens: 2, stopTokenIds: [2], ignoreEos: true } });
  t.appendToken(2);
  assert.equal(t.checkStop(100), false);
  t.appendToken(2);
  assert.equal(t.checkStop(100), true);
  assert.equal(t.finishReason, "length");

  const u = new Sequence({ promptIds: [1], stopping: { maxTokens: 10, stopTokenIds: [2], minTokens: 2 } });
  u.appendToken(2);
  assert.equal(u.checkStop(100), false);
  const v = new Sequence({ promptIds: [1, 2, 3], stopping: { maxTokens: 10 } });
  v.appendToken(4);
  assert.equal(v.checkStop(4), true, "model length reached");
  assert.equal(v.finishReason, "length");
  assert.throws(() => new Sequence({ promptIds: [] }));
  assert.throws(() => new Sequence({ promptIds: [1], sampling: { topP: 0 } }), /top_p/);
});

Deno.test("sequence works with the block manager", () => {
  const bm = new BlockManager(4, 4);
  const s = new Sequence({ promptIds: [1, 2, 3, 4, 5] });
  bm.allocate(s);
  assert.equal(s.blockTable.length, 2);
  s.appendToken(6);
  bm.mayAppend(s);
  bm.free(s);
  assert.equal(bm.numFreeBlocks, 4);
});
