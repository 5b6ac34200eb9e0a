// kv_blocks_test.ts — block manager bookkeeping, prefix sharing, and random-operation properties.
import assert from "node:assert/strict";
import { BlockManager, BlockManagerError, type BlockSequence } from "../../server/engine/kv_blocks.ts";
import { Rng } from "../../server/engine/sampling.ts";

function seq(tokens: number[], salt = ""): BlockSequence & { tokenIds: number[] } {
  return { tokenIds: tokens.slice(), blockTable: [], numCachedTokens: 0, cacheSalt: salt };
}
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

Deno.test("allocate, append across a block boundary, slot mapping, free", () => {
  const bm = new BlockManager(8, 4);
  const s = seq(range(6));
  assert.ok(bm.canAllocate(s));
  bm.allocate(s);
  assert.equal(s.blockTable.length, 2);
  assert.equal(s.numCachedTokens, 0);
  assert.equal(bm.numFreeBlocks, 6);
  const slots = bm.slotMapping(s, 0, 6);
  assert.deepEqual([...slots], [0, 1, 2, 3, 0, 1].map((o, i) => s.blockTable[i < 4 ? 0 : 1] * 4 + o));
  for (const t of [6, 7]) {
    s.tokenIds.push(t);
    assert.ok(bm.canAppend(s));
    bm.mayAppend(s);
  }
  assert.equal(s.blockTable.length, 2);
  s.tokenIds.push(8);
  bm.mayAppend(s); // 9th token starts block 3
  assert.equal(s.blockTable.length, 3);
  assert.equal(bm.slotMapping(s, 8, 9)[0], s.blockTable[2] * 4);
  bm.checkInvariants([s.blockTable]);
  bm.free(s);
  assert.equal(bm.numFreeBlocks, 8);
  assert.deepEqual(s.blockTable, []);
  bm.checkInvariants([]);
  assert.throws(() => bm.free({ ...s, blockTable: [0] }), BlockManagerError);
});

Deno.test("prefix caching: full blocks are shared, the last token's block never is", () => {
  const bm = new BlockManager(16, 4);
  const a = seq(range(10));
  bm.allocate(a);
  const b = seq([...range(8), 100, 101, 102]);
  bm.allocate(b);
  assert.equal(b.numCachedTokens, 8);
  assert.deepEqual(b.blockTable.slice(0, 2), a.blockTable.slice(0, 2));
  assert.notEqual(b.blockTable[2], a.blockTable[2]);
  assert.equal(bm.refCount(a.blockTable[0]), 2);
  // Exactly 8 tokens: block 2 holds the last token, so only block 1 is reused.
  const c = seq(range(8));
  bm.allocate(c);
  assert.equal(c.numCachedTokens, 4);
  assert.equal(c.blockTable[0], a.blockTable[0]);
  assert.notEqual(c.blockTable[1], a.blockTable[1]);
  // A different salt (adapter) shares nothing.
  const d = seq(range(10), "adapter-1");
  bm.allocate(d);
  assert.equal(d.numCachedTokens, 0);
  bm.checkInvariants([a.blockTable, b.blockTable, c.blockTable, d.blockTable]);
  // Freed prefix blocks stay cached until reused.
  for (const s of [a, b, c, d]) bm.free(s);
  assert.equal(bm.numFreeBlocks, 16);
  const e = seq([...range(8), 7, 7]);
  bm.allocate(e);
  assert.equal(e.numCachedTokens, 8);
  bm.checkInvariants([e.blockTable]);
});

Deno.test("blocks filled by decoding become shareable", () => {
  const bm = new BlockManager(8, 4);
  const a = seq(range(3));
  bm.allocate(a);
  for (const t of [3, 4, 5, 6, 7, 8]) {
    a.tokenIds.push(t);
    bm.mayAppend(a);
  }
  const b = seq(range(10));
  bm.allocate(b);
  assert.equal(b.numCachedTokens, 8);
  assert.deepEqual(b.blockTable.slice(0, 2), a.blockTable.slice(0, 2));
  bm.checkInvariants([a.blockTable, b.blockTable]);
});

Deno.test("out of blocks: canAllocate / canAppend say so, allocate throws without side effects", () => {
  const bm = new BlockManager(3, 2);
  const a = seq(range(5));
  bm.allocate(a);
  assert.equal(bm.numFreeBlocks, 0);
  const b = seq(range(3, 50));
  assert.ok(!bm.canAllocate(b));
  assert.throws(() => bm.allocate(b), /out of KV cache blocks/);
  assert.deepEqual(b.blockTable, []);
  a.tokenIds.push(5);
  assert.ok(bm.canAppend(a)); // 6 tokens fit in 3 blocks
  bm.mayAppend(a);
  a.tokenIds.push(6);
  assert.ok(!bm.canAppend(a)); // the 7th needs a 4th block
  a.tokenIds.pop();
  bm.checkInvariants([a.blockTable]);
  // A request whose prefix is cached may fit even though canAllocate (worst case) says no.
  const bm2 = new BlockManager(3, 2);
  const x = seq(range(4));
  bm2.allocate(x);
  const c = seq([...range(4), 9]);
  assert.ok(!bm2.canAllocate(c));
  bm2.allocate(c);
  assert.equal(c.numCachedTokens, 4);
  assert.equal(bm2.numFreeBlocks, 0);
  bm2.checkInvariants([x.blockTable, c.blockTable]);
});

Deno.test("property: random allocate/append/free never leaks, double-frees or shares a written slot", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rng = new Rng(seed);
    const bs = 1 + Math.floor(rng.next() * 8);
    const bm = new BlockManager(64, bs);
    const live: Array<BlockSequence & { tokenIds: number[] }> = [];
    const prefixes = [range(20), range(20, 1000), range(13, 500)];
    for (let step = 0; step < 3000; step++) {
      const r = rng.next();
      if (r < 0.25) {
        const base = prefixes[Math.floor(rng.next() * prefixes.length)];
        const n = 1 + Math.floor(rng.next() * 30);
        const toks = Array.from({ length: n }, (_, i) => (i < base.length && rng.next() < 0.9 ? base[i] : Math.floor(rng.next() * 50)));
        const s = seq(toks, rng.next() < 0.2 ? "x" : "");
        if (bm.canAllocate(s)) {
          bm.allocate(s);
          assert.ok(s.numCachedTokens % bs === 0 && s.numCachedTokens < n);
          live.push(s);
        }
      } else if (r < 0.8 && live.length > 0) {
        const s = live[Math.floor(rng.next() * live.length)];
        s.tokenIds.push(Math.floor(rng.next() * 50));
        if (bm.canAppend(s)) bm.mayAppend(s);
        else s.tokenIds.pop(); // the scheduler would preempt instead
      } else if (live.length > 0) {
        const i = Math.floor(rng.next() * live.length);
        bm.free(live[i]);
        live.splice(i, 1);
      }
      if (step % 50 === 0) {
        bm.checkInvariants(live.map((s) => s.blockTable));
        // Every live sequence's not-yet-full (writable) last block belongs to it alone.
        const owner = new Map<number, number>();
        live.forEach((s, i) => {
          assert.equal(s.blockTable.length, Math.ceil(s.tokenIds.length / bs));
          if (s.tokenIds.length % bs !== 0) {
            const last = s.blockTable[s.blockTable.length - 1];
            assert.equal(bm.refCount(last), 1);
            assert.ok(!owner.has(last));
            owner.set(last, i);
          }
        });
      }
    }
    for (const s of live) bm.free(s);
    assert.equal(bm.numFreeBlocks, 64, `seed ${seed}: leaked blocks`);
    bm.checkInvariants([]);
  }
});

Deno.test("chunked prefill: a prompt's blocks are shared only once a scheduled step computes them", () => {
  const bm = new BlockManager(16, 4);
  const a = seq(range(14));
  bm.allocate(a, 5); // the first step computes tokens [0, 5): block 0 is filled
  const b = seq(range(14));
  bm.allocate(b);
  assert.equal(b.numCachedTokens, 4, "only block 0 of a is filled");
  bm.markFilled(a, 12); // a later chunk computes [5, 12): blocks 1 and 2
  const c = seq(range(14));
  bm.allocate(c);
  assert.equal(c.numCachedTokens, 12);
  bm.checkInvariants([a.blockTable, b.blockTable, c.blockTable]);
  // a sequence freed before its blocks were computed leaves nothing matchable past them
  for (const s of [a, b, c]) bm.free(s);
  const d = seq(range(14, 100));
  bm.allocate(d, 0);
  bm.free(d);
  const e = seq(range(14, 100));
  bm.allocate(e);
  assert.equal(e.numCachedTokens, 0);
});
