// tensor_reader_test.ts — the loader's read-ahead (server/model/tensor_reader.ts over
// ql_read_file): every tensor's bytes equal a plain read whatever the order asked in, the bytes
// stay valid until the next read, and a bad file is an error naming it.
import assert from "node:assert/strict";
import { openContext } from "../native/backends.ts";
import { readFileInto } from "../../server/ffi/files.ts";
import { SafetensorsModel, writeSafetensors } from "../../server/model/safetensors.ts";
import { TensorReader } from "../../server/model/tensor_reader.ts";

/** A safetensors file of big (read-ahead) and small tensors with seeded bytes. */
async function makeFile(path: string): Promise<Map<string, Uint8Array>> {
  const tensors = new Map<string, Uint8Array>();
  let seed = 7;
  const sizes = [3 << 20, 1 << 10, (1 << 20) + 12, 5 << 20, 64, 2 << 20];
  sizes.forEach((n, i) => {
    const b = new Uint8Array(n);
    for (let j = 0; j < n; j++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      b[j] = seed >>> 24;
    }
    tensors.set(`t${i}`, b);
  });
  await writeSafetensors(path, [...tensors].map(([name, data]) => ({ name, dtype: "U8", shape: [data.length], data })));
  return tensors;
}

Deno.test("tensor reader: the bytes of every tensor, in file order and out of it, equal a plain read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlora-reader-" });
  using ctx = openContext("cpu");
  try {
    const want = await makeFile(`${dir}/model.safetensors`);
    const st = await SafetensorsModel.open(dir);
    try {
      for (const order of [["t0", "t1", "t2", "t3", "t4", "t5"], ["t3", "t0", "t5", "t2", "t1", "t3", "t4", "t0"]]) {
        const reader = new TensorReader(ctx, st);
        try {
          for (const name of order) {
            const got = await reader.read(name);
            assert.deepEqual(got, want.get(name), `${name} (order ${order.join(",")})`);
            // the read ahead of the next tensor (into the other buffer) leaves these bytes alone
            await new Promise((r) => setTimeout(r, 20));
            assert.deepEqual(got, want.get(name), `${name} after the read ahead`);
          }
        } finally {
          await reader.close();
        }
      }
    } finally {
      st.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ql_read_file: a missing file and a short file are errors that name the file", async () => {
  using ctx = openContext("cpu");
  const dir = await Deno.makeTempDir({ prefix: "qlora-readfile-" });
  try {
    await assert.rejects(readFileInto(ctx, `${dir}/absent.bin`, 0, new Uint8Array(8)), /cannot read .*absent\.bin: ENOENT/);
    await Deno.writeFile(`${dir}/short.bin`, Uint8Array.of(1, 2, 3, 4, 5));
    const dst = new Uint8Array(3);
    await readFileInto(ctx, `${dir}/short.bin`, 2, dst);
    assert.deepEqual(dst, Uint8Array.of(3, 4, 5));
    await assert.rejects(readFileInto(ctx, `${dir}/short.bin`, 3, new Uint8Array(4)), /short\.bin: unexpected end of file at byte 5/);
    await assert.rejects(readFileInto(ctx, dir, 0, new Uint8Array(4)), /EISDIR/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
