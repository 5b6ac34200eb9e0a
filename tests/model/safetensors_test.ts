// safetensors_test.ts — the reader rejects every malformed file with a clear message; the writer round-trips.
import assert from "node:assert/strict";
import {
  f32Tensor,
  MAX_HEADER_SIZE,
  parseHeader,
  SafetensorsError,
  SafetensorsFile,
  SafetensorsModel,
  writeSafetensors,
} from "../../server/model/safetensors.ts";

import { STORIES_DIR as STORIES } from "../fixtures.ts";

/** Raw file: 8-byte LE header length, header text (as given), `dataLength` data bytes. */
function rawFile(header: string | object, dataLength: number, opts: { declaredLength?: bigint } = {}): Uint8Array {
  const h = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + dataLength);
  new DataView(out.buffer).setBigUint64(0, opts.declaredLength ?? BigInt(h.length), true);
  out.set(h, 8);
  for (let i = 0; i < dataLength; i++) out[8 + h.length + i] = i & 255;
  return out;
}

async function withFile(bytes: Uint8Array, fn: (path: string) => Promise<void>): Promise<void> {
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    await Deno.writeFile(path, bytes);
    await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

async function rejects(bytes: Uint8Array, pattern: RegExp): Promise<void> {
  await withFile(bytes, async (path) => {
    await assert.rejects(() => SafetensorsFile.open(path), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
      assert.match((e as Error).message, pattern);
      return true;
    });
  });
}

const good = {
  a: { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
  b: { dtype: "BF16", shape: [4], data_offsets: [24, 32] },
};

Deno.test("a well-formed raw file opens", async () => {
  await withFile(rawFile({ ...good, __metadata__: { format: "pt" } }, 32), async (path) => {
    const f = await SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.metadata, { format: "pt" });
      assert.deepEqual(f.info("a").shape, [2, 3]);
      const b = await f.read("b");
      assert.deepEqual([...b], [24, 25, 26, 27, 28, 29, 30, 31]);
    } finally {
      f.close();
    }
  });
});

Deno.test("truncated: shorter than the 8-byte length", () => rejects(new Uint8Array(5), /too short/));
Deno.test("truncated: header length runs past the end", () => rejects(rawFile(good, 0, { declaredLength: 5000n }), /runs past the end/));
Deno.test("truncated: data shorter than the header says", () => rejects(rawFile(good, 20), /truncated/));
Deno.test("trailing bytes after the last tensor", () => rejects(rawFile(good, 40), /trailing bytes/));
Deno.test("oversized header length", () => rejects(rawFile(good, 32, { declaredLength: BigInt(MAX_HEADER_SIZE) + 1n }), /exceeds/));
Deno.test("huge (u64) header length", () => rejects(rawFile(good, 32, { declaredLength: 0xffffffffffffffffn }), /exceeds/));
Deno.test("overlapping tensors", () =>
  rejects(
    rawFile({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] }, b: { dtype: "F32", shape: [4], data_offsets: [8, 24] } }, 24),
    /overlaps/,
  ));
Deno.test("gap between tensors", () =>
  rejects(
    rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [12, 20] } }, 20),
    /gap/,
  ));
Deno.test("data not starting at 0", () => rejects(rawFile({ a: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, 12), /gap/));
Deno.test("unknown dtype", () => rejects(rawFile({ a: { dtype: "F33", shape: [2], data_offsets: [0, 8] } }, 8), /unknown dtype "F33"/));
Deno.test("byte size does not match shape × dtype", () =>
  rejects(rawFile({ a: { dtype: "F16", shape: [3], data_offsets: [0, 8] } }, 8), /needs 6 bytes.*span 8/));
Deno.test("duplicate tensor names", () =>
  rejects(
    rawFile(
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
      8,
    ),
    /duplicate tensor name "a"/,
  ));
Deno.test("header that is a JSON array", () => rejects(rawFile("[1,2,3]", 0), /must be a JSON object/));
Deno.test("header that is a JSON number", () => rejects(rawFile("42", 0), /must be a JSON object/));
Deno.test("header that is not JSON", () => rejects(rawFile("{not json", 0), /not valid JSON/));
Deno.test("header that is not UTF-8", () => rejects(rawFile("{}", 0, { declaredLength: 2n }).map((b, i) => (i === 8 ? 0xff : b)), /UTF-8/));
Deno.test("negative or fractional shape", async () => {
  await rejects(rawFile({ a: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }, 0), /invalid shape/);
  await rejects(rawFile({ a: { dtype: "F32", shape: [1.5], data_offsets: [0, 4] } }, 4), /invalid shape/);
});
Deno.test("metadata values must be strings", () => rejects(rawFile({ __metadata__: { n: 1 } }, 0), /must be a string/));
Deno.test("tensor entry with a bad data_offsets", () =>
  rejects(rawFile({ a: { dtype: "F32", shape: [1], data_offsets: [4, 0] } }, 4), /data_offsets/));
Deno.test("parseHeader alone: scalar and empty tensors are fine", () => {
  const h = new TextEncoder().encode(
    JSON.stringify({ s: { dtype: "F64", shape: [], data_offsets: [0, 8] }, e: { dtype: "F32", shape: [0, 5], data_offsets: [8, 8] } }),
  );
  const p = parseHeader(h, 8 + h.length + 8);
  assert.equal(p.tensors.get("s")!.numel, 1);
  assert.equal(p.tensors.get("e")!.byteLength, 0);
});

Deno.test("writer round-trips tensors and metadata, atomically", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/x.safetensors`;
    const a = Float32Array.from({ length: 6 }, (_, i) => i * 0.5 - 1);
    await writeSafetensors(path, [
      f32Tensor("w.a", [2, 3], a),
      { name: "w.b", dtype: "I64", shape: [1], data: () => new Uint8Array([7, 0, 0, 0, 0, 0, 0, 0]) },
      { name: "w.empty", dtype: "F16", shape: [0], data: new Uint8Array(0) },
    ], { format: "pt", note: "hi" });
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["x.safetensors"], "no temp file left behind");
    const bytes = await Deno.readFile(path);
    const hlen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(hlen % 8, 0, "header padded to 8 bytes");
    const f = await SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.metadata, { format: "pt", note: "hi" });
      assert.deepEqual([...await f.readF32("w.a")], [...a]);
      assert.deepEqual([...await f.read("w.b")], [7, 0, 0, 0, 0, 0, 0, 0]);
      assert.equal((await f.read("w.empty")).length, 0);
      // Concurrent reads on one handle are serialized correctly.
      const [x, y] = await Promise.all([f.read("w.a"), f.read("w.b")]);
      assert.equal(x.length, 24);
      assert.equal(y[0], 7);
    } finally {
      f.close();
    }
    await assert.rejects(
      () => writeSafetensors(path, [{ name: "bad", dtype: "F32", shape: [2], data: new Uint8Array(4) }]),
      /4 bytes given, shape needs 8/,
    );
    await writeSafetensors(`${dir}/r.safetensors`, { z: { dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) } });
    const r = await SafetensorsFile.open(`${dir}/r.safetensors`);
    assert.deepEqual([...await r.read("z")], [1, 2, 3]);
    r.close();
    await assert.rejects(
      () => writeSafetensors(`${dir}/y.safetensors`, [f32Tensor("a", [1], new Float32Array(1)), f32Tensor("a", [1], new Float32Array(1))]),
      /duplicate/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stories260K weights open; sharded index loading", async () => {
  const m = await SafetensorsModel.open(STORIES);
  try {
    assert.ok(m.has("model.embed_tokens.weight"));
    assert.deepEqual(m.info("model.embed_tokens.weight").shape, [512, 64]);
    assert.ok(!m.has("lm_head.weight"));
  } finally {
    m.close();
  }
  const dir = await Deno.makeTempDir();
  try {
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, [f32Tensor("a", [2], new Float32Array([1, 2]))]);
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, [f32Tensor("b", [1], new Float32Array([3]))]);
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: {}, weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" } }),
    );
    const s = await SafetensorsModel.open(dir);
    try {
      assert.deepEqual(s.names.sort(), ["a", "b"]);
      assert.deepEqual([...await s.readF32("b")], [3]);
      assert.deepEqual([...await s.readF32("a")], [1, 2]);
    } finally {
      s.close();
    }
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { c: "model-00001-of-00002.safetensors" } }),
    );
    await assert.rejects(() => SafetensorsModel.open(dir), /"c" listed in the index is missing/);
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map: { a: "../etc/passwd" } }));
    await assert.rejects(() => SafetensorsModel.open(dir), /not a plain file name/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
