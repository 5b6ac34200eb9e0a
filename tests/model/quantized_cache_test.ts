// quantized_cache_test.ts — the quantized-base cache (server/model/quantized_cache.ts): the first
// load of a 16/32-bit checkpoint writes <root>/<key>/ in bitsandbytes' layout, the next load reads
// it (bit-identical logits, no quantization), a changed source gets a new key (the stale entry is
// removed), and only renamed folders count: leftover temp folders are ignored and swept.
import assert from "node:assert/strict";
import { openContext } from "../native/backends.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { type LoadedModel, loadModel, type LoadOptions } from "../../server/model/loader.ts";
import { SafetensorsModel } from "../../server/model/safetensors.ts";
import type { Context } from "../../server/ffi/tensor.ts";
import type { LlamaModel } from "../../server/model/llama.ts";

const TOKENS = [1, 40, 41, 42, 100, 7, 8, 200, 201, 5];

function lastLogits(model: LlamaModel, tokens: number[]): number[] {
  const cache = model.newKvCache(4, 16);
  try {
    const T = tokens.length;
    return Array.from(model.forward({
      tokens: Int32Array.from(tokens),
      positions: Int32Array.from(tokens, (_, i) => i),
      slots: Int32Array.from(tokens, (_, i) => i),
      paged: { blockTables: Int32Array.of(0, 1, 2, 3), qStart: Int32Array.of(0, T), ctxLens: Int32Array.of(T), S: 1, maxBlocks: 4 },
      logitRows: Int32Array.of(T - 1),
    }, cache));
  } finally {
    cache.dispose();
  }
}

async function load(ctx: Context, dir: string, root: string, opts: LoadOptions = {}) {
  const said: string[] = [];
  const t0 = performance.now();
  const m = await loadModel(ctx, dir, { quant: "nf4", ...opts, quantizedCacheDir: root, onQuantizedCache: (e) => said.push(e.msg) });
  return { m, said, seconds: (performance.now() - t0) / 1000 };
}

const dirs = async (root: string) => (await Array.fromAsync(Deno.readDir(root))).filter((e) => e.isDirectory).map((e) => e.name).sort();

async function withModel(m: LoadedModel, f: (m: LoadedModel) => Promise<void> | void): Promise<void> {
  try {
    await f(m);
  } finally {
    m.model.dispose();
  }
}

Deno.test("the first load writes the quantized cache; the second reads it and computes the same logits (smollm-135m shape)", async () => {
  using ctx = openContext("cpu");
  const tmp = await Deno.makeTempDir({ prefix: "qlora-qcache-" });
  try {
    const src = `${tmp}/smollm`, root = `${tmp}/data/quantized`;
    await makeModel({ shape: "smollm-135m", out: src, seed: 5 });
    const first = await load(ctx, src, root);
    let logits: number[] = [];
    await withModel(first.m, (m) => {
      assert.equal(m.quantizedCache?.status, "written");
      assert.equal(m.prequantized, false);
      assert.match(first.said.at(-1)!, /^quantized cache: written .* in [\d.]+ s$/);
      logits = lastLogits(m.model, TOKENS);
    });
    const entry = first.m.quantizedCache!.dir!;
    assert.deepEqual(await dirs(root), [entry.split("/").pop()]);
    // bitsandbytes' layout: packed U8 codes with their quant state, the rest as the source has it
    const st = await SafetensorsModel.open(entry);
    try {
      const q = "model.layers.0.self_attn.q_proj.weight";
      assert.equal(st.info(q).dtype, "U8");
      assert.ok(st.has(`${q}.absmax`) && st.has(`${q}.quant_map`) && st.has(`${q}.nested_absmax`));
      assert.ok(st.has(`${q}.quant_state.bitsandbytes__nf4`));
      assert.equal(st.info("model.embed_tokens.weight").dtype, "BF16");
    } finally {
      st.close();
    }
    const second = await load(ctx, src, root);
    await withModel(second.m, (m) => {
      assert.equal(m.quantizedCache?.status, "hit");
      assert.equal(m.quantizedCache?.dir, entry);
      assert.deepEqual(second.said, [`quantized cache: hit ${entry}`]);
      assert.equal(m.quant, "nf4");
      assert.deepEqual(lastLogits(m.model, TOKENS), logits);
    });
    // and without the cache, quantizing at load gives the same again
    const none = await loadModel(ctx, src, { quant: "nf4" });
    await withModel(none, (m) => assert.deepEqual(lastLogits(m.model, TOKENS), logits));
    console.log(
      `smollm-135m shape: first load (quantize + write the cache) ${first.seconds.toFixed(2)} s ` +
        `(of which writing ${first.m.quantizedCache!.seconds!.toFixed(2)} s), cached load ${second.seconds.toFixed(2)} s`,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("background write (a server's first start): the model is returned at once, the cache is written meanwhile and read next time", async () => {
  using ctx = openContext("cpu");
  const tmp = await Deno.makeTempDir({ prefix: "qlora-qcache-bg-" });
  try {
    const src = `${tmp}/tiny`, root = `${tmp}/data/quantized`;
    await makeModel({ shape: "tiny", out: src, seed: 9, dtype: "bf16" });
    const first = await load(ctx, src, root, { quantizedCacheWrite: "background" });
    let logits: number[] = [];
    await withModel(first.m, async (m) => {
      assert.equal(m.quantizedCache?.status, "writing");
      assert.match(first.said.at(-1)!, /^quantized cache: writing .* while serving$/);
      // the model serves while the write runs (a forward pass between its steps)
      logits = lastLogits(m.model, TOKENS);
      const done = await m.quantizedCache!.done!;
      assert.equal(done.status, "written", done.reason);
      assert.equal(done.dir, m.quantizedCache!.dir);
    });
    const second = await load(ctx, src, root, { quantizedCacheWrite: "background" });
    await withModel(second.m, (m) => {
      assert.equal(m.quantizedCache?.status, "hit");
      assert.deepEqual(lastLogits(m.model, TOKENS), logits);
    });
    // disposed while writing (the server stopped): the write fails cleanly and leaves no folder
    const root2 = `${tmp}/data2/quantized`;
    const third = await load(ctx, src, root2, { quantizedCacheWrite: "background" });
    third.m.model.dispose();
    const outcome = await third.m.quantizedCache!.done!;
    assert.equal(outcome.status, "failed");
    assert.deepEqual(await dirs(root2), []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a changed source gets a new key: recomputed, and the stale entry removed", async () => {
  using ctx = openContext("cpu");
  const tmp = await Deno.makeTempDir({ prefix: "qlora-qcache-" });
  try {
    const src = `${tmp}/tiny`, root = `${tmp}/quantized`;
    await makeModel({ shape: "tiny", out: src, seed: 1, std: 0.1 });
    const a = await load(ctx, src, root);
    const logitsA = lastLogits(a.m.model, TOKENS);
    a.m.model.dispose();
    const keyA = a.m.quantizedCache!.dir!;
    // other settings are other entries, kept side by side
    const fp4 = await load(ctx, src, root, { quant: "fp4" });
    fp4.m.model.dispose();
    assert.equal(fp4.m.quantizedCache?.status, "written");
    assert.equal((await dirs(root)).length, 2);

    // rewrite the weights (a different seed)
    await makeModel({ shape: "tiny", out: src, seed: 2, std: 0.1 });
    const b = await load(ctx, src, root);
    await withModel(b.m, async (m) => {
      assert.equal(m.quantizedCache?.status, "written");
      assert.notEqual(m.quantizedCache?.dir, keyA);
      assert.ok(b.said.some((s) => s.startsWith("quantized cache: removed 1 ")), b.said.join("; "));
      assert.ok(!(await Deno.stat(keyA).catch(() => null)), "the stale entry is gone");
      const fresh = await loadModel(ctx, src, { quant: "nf4" });
      const want = lastLogits(fresh.model, TOKENS);
      fresh.model.dispose();
      const got = lastLogits(m.model, TOKENS);
      assert.deepEqual(got, want);
      assert.notDeepEqual(got, logitsA);
    });
    assert.equal((await dirs(root)).length, 2); // the new nf4 entry and the fp4 one

    // only touching the file (same bytes, new mtime) is a change too
    const file = `${src}/model.safetensors`;
    const keyB = b.m.quantizedCache!.dir!;
    await Deno.utime(file, new Date(), new Date(Date.now() + 5000));
    const c = await load(ctx, src, root);
    c.m.model.dispose();
    assert.equal(c.m.quantizedCache?.status, "written");
    assert.notEqual(c.m.quantizedCache?.dir, keyB);
    const d = await load(ctx, src, root);
    d.m.model.dispose();
    assert.equal(d.m.quantizedCache?.status, "hit");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("an entry is complete only once renamed: leftover temp folders are ignored and swept", async () => {
  using ctx = openContext("cpu");
  const tmp = await Deno.makeTempDir({ prefix: "qlora-qcache-" });
  try {
    const src = `${tmp}/tiny`, root = `${tmp}/quantized`;
    await makeModel({ shape: "tiny", out: src, seed: 3, std: 0.1 });
    const a = await load(ctx, src, root);
    a.m.model.dispose();
    const entry = a.m.quantizedCache!.dir!;
    const key = entry.split("/").pop()!;
    // a write that died half-way (a process long gone), and one of this process that is not running
    const dead = `${root}/.tmp-999999999-${crypto.randomUUID()}`, mine = `${root}/.tmp-${Deno.pid}-${crypto.randomUUID()}`;
    for (const d of [dead, mine]) {
      await Deno.mkdir(d);
      await Deno.copyFile(`${entry}/model.safetensors`, `${d}/model.safetensors`);
    }
    // (where /proc is unreadable, another process's temp folder counts as abandoned after an hour)
    const longAgo = new Date(Date.now() - 2 * 3600_000);
    await Deno.utime(dead, longAgo, longAgo);
    // a temp folder of a live process (pid 1) written just now is left alone
    const live = `${root}/.tmp-1-${crypto.randomUUID()}`;
    await Deno.mkdir(live);
    // a folder named by the key but incomplete (no manifest) is no entry: quantized again
    await Deno.remove(`${entry}/manifest.json`);
    const b = await load(ctx, src, root);
    b.m.model.dispose();
    assert.equal(b.m.quantizedCache?.status, "written");
    assert.deepEqual(await dirs(root), [live.split("/").pop(), key].sort());
    await Deno.remove(live);
    const c = await load(ctx, src, root);
    c.m.model.dispose();
    assert.equal(c.m.quantizedCache?.status, "hit");
    // int4 has no bitsandbytes layout: no cache
    const i4 = await load(ctx, src, root, { quant: "int4" });
    i4.m.model.dispose();
    assert.equal(i4.m.quantizedCache?.status, "skipped");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
