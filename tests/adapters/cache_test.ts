// cache_test.ts — the device adapter cache: LRU eviction bounded in bytes, pinned adapters never
// evicted, unload of a pinned adapter deferred to its last release, loads shared by concurrent
// acquires; and the binder's slot tables (rows → slots, zero pairs for missing modules).
import assert from "node:assert/strict";
import { openContext } from "../native/backends.ts";
import { AdapterCache } from "../../server/adapters/cache.ts";
import { CacheBinder } from "../../server/adapters/binder.ts";
import { inspectPeftAdapter, peftKey } from "../../server/adapters/peft.ts";
import { float32ToBf16Bytes, writeSafetensors } from "../../server/model/safetensors.ts";
import { Sequence } from "../../server/engine/sequence.ts";
import { makeAdapter, STORIES_SHAPE } from "../helpers.ts";

Deno.test("adapter cache: LRU by bytes, pinned adapters stay, unload waits for the last request", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlora-cache-" });
  const ctx = openContext("cpu", 1);
  try {
    for (const n of ["a", "b", "c", "d"]) await makeAdapter(`${dir}/${n}`, STORIES_SHAPE, { seed: n.charCodeAt(0) });
    const bytes = (await inspectPeftAdapter(`${dir}/a`, STORIES_SHAPE)).deviceBytes;
    const cache = new AdapterCache(ctx, STORIES_SHAPE, Math.floor(bytes * 2.5));
    const use = async (id: string) => cache.release(id, await cache.acquire(id, `${dir}/${id}`));
    // concurrent acquires share one load
    const [x, y] = await Promise.all([cache.acquire("a", `${dir}/a`), cache.acquire("a", `${dir}/a`)]);
    assert.equal(x, y);
    assert.equal(x.refs, 2);
    assert.equal(cache.loads, 1);
    cache.release("a", x);
    cache.release("a", y);
    await use("b");
    await use("a"); // a is now the most recent
    await use("c"); // evicts b (least recently used)
    assert.deepEqual(cache.ids().sort(), ["a", "c"]);
    assert.ok(cache.bytes <= Math.floor(bytes * 2.5));
    // pin c; loading b and d evicts a, then would need c: c stays (over budget rather than evicting in-use weights)
    const pinned = await cache.acquire("c", `${dir}/c`);
    await use("b");
    await use("d");
    assert.ok(cache.ids().includes("c"));
    assert.equal(pinned.modules.size, STORIES_SHAPE.layers * 7);
    // unload while pinned: still resident for its request, freed at release
    assert.equal(cache.unload("c"), true);
    assert.ok(cache.get("c"));
    assert.equal(pinned.modules.size, STORIES_SHAPE.layers * 7);
    cache.release("c", pinned);
    assert.equal(cache.get("c"), undefined);
    assert.equal(pinned.modules.size, 0);
    // a broken adapter fails its acquire and leaves nothing behind
    await Deno.writeFile(`${dir}/a/adapter_model.safetensors`, new Uint8Array(16));
    cache.unload("a");
    await assert.rejects(cache.acquire("a", `${dir}/a`));
    assert.equal(cache.get("a"), undefined);

    // BF16 tensors take the converting path; the weights on the device are the f32 values
    const S = STORIES_SHAPE, r = 2, kv = S.kvHeads * S.headDim;
    await Deno.mkdir(`${dir}/bf`);
    await Deno.writeTextFile(
      `${dir}/bf/adapter_config.json`,
      JSON.stringify({ peft_type: "LORA", r, lora_alpha: 2, target_modules: ["v_proj"] }),
    );
    const av = new Float32Array(r * S.hidden).map((_, i) => i / 8), bv = new Float32Array(kv * r).fill(0.5);
    await writeSafetensors(`${dir}/bf/adapter_model.safetensors`, [
      { name: peftKey(1, "v_proj", "A"), dtype: "BF16", shape: [r, S.hidden], data: float32ToBf16Bytes(av) },
      { name: peftKey(1, "v_proj", "B"), dtype: "BF16", shape: [kv, r], data: float32ToBf16Bytes(bv) },
    ]);
    const bf = await cache.acquire("bf", `${dir}/bf`);
    const m = bf.modules.get("1.v_proj")!;
    const back = new Float32Array(Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(m.a)!, av.byteLength));
    assert.deepEqual([...back.subarray(0, 4)], [0, 0.125, 0.25, 0.375]);
    cache.release("bf", bf);

    // binder: rows map to their sequence's slot; modules an adapter lacks get scale-0 pairs
    await makeAdapter(`${dir}/q`, STORIES_SHAPE, { seed: 5, modules: ["q_proj"] });
    const q = await cache.acquire("q", `${dir}/q`);
    const b = await cache.acquire("b", `${dir}/b`);
    const binder = new CacheBinder(cache);
    const seq = (adapterUid: string | null) => new Sequence({ promptIds: [1, 2], adapterUid });
    const chunks = [seq("q"), seq(null), seq("b")].map((s) => ({ seq: s, start: 0, end: 2 }));
    const bound = binder.bind(chunks, Int32Array.of(0, 0, 1, 1, 2, 2))!;
    assert.deepEqual([...bound.rowAdapter], [0, 0, -1, -1, 1, 1]);
    const qs = bound.slots(0, "q_proj")!;
    assert.deepEqual([...qs.ranks], [4, 4]);
    const vs = bound.slots(0, "v_proj")!;
    assert.deepEqual([...vs.scales], [0, 1]);
    assert.equal(binder.bind([{ seq: seq(null), start: 0, end: 2 }], Int32Array.of(0, 0)), undefined);
    cache.release("q", q);
    cache.release("b", b);
    binder.dispose();
    cache.dispose();
  } finally {
    ctx.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
