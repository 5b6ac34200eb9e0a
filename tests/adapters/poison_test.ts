// poison_test.ts — a hostile adapter cannot get into a batch: a lora_alpha that is finite in JSON
// but infinite as f32 (1e308), an oversized scale, or NaN / Inf weights are refused when registered
// (400 invalid_adapter naming the fault), and another tenant's requests keep their exact output.
import assert from "node:assert/strict";
import { makeAdapter, REFERENCE, STORIES_SHAPE, storiesServer } from "../helpers.ts";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../../server/adapters/peft.ts";
import { SafetensorsFile } from "../../server/model/safetensors.ts";

const KEYS = [{ key: "sk-poison-tenant-a", tenant: "a" }, { key: "sk-poison-tenant-b", tenant: "b" }];

Deno.test({
  name: "hostile adapters (alpha 1e308, huge scale, NaN or Inf weights) are refused at registration; the other tenant is untouched",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "qlora-poison-" });
    const s = await storiesServer(root, { keys: KEYS });
    const req = (path: string, body: unknown, key: string) =>
      s.app.request(path, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const c = REFERENCE.cases[0];
    const complete = async () => {
      const r = await req("/v1/completions", { model: "stories260K", prompt: c.prompt, max_tokens: 12, temperature: 0 }, KEYS[1].key);
      assert.equal(r.status, 200);
      return (await r.json()).choices[0].text as string;
    };
    try {
      const alone = await complete();
      const poison = async (name: string, edit: (dir: string) => Promise<void>, why: RegExp) => {
        const dir = `${root}/adapters/a/${name}`;
        await makeAdapter(dir, STORIES_SHAPE, { seed: 3 });
        await edit(dir);
        const r = await req("/v1/load_lora_adapter", { lora_name: name, lora_path: `a/${name}` }, KEYS[0].key);
        const body = await r.json();
        assert.equal(r.status, 400, `${name}: ${JSON.stringify(body)}`);
        assert.equal(body.error.code, "invalid_adapter");
        assert.match(body.error.message, why);
        const use = await req("/v1/completions", { model: name, prompt: c.prompt, max_tokens: 4 }, KEYS[0].key);
        assert.equal(use.status, 404, `${name} was not registered`);
      };
      const config = async (dir: string, patch: Record<string, unknown>) => {
        const cfg = JSON.parse(await Deno.readTextFile(`${dir}/${ADAPTER_CONFIG}`));
        await Deno.writeTextFile(`${dir}/${ADAPTER_CONFIG}`, JSON.stringify({ ...cfg, ...patch }));
      };
      /** Overwrites one f32 element of the first tensor in place. */
      const weight = async (dir: string, value: number) => {
        const st = await SafetensorsFile.open(`${dir}/${ADAPTER_WEIGHTS}`);
        const first = st.info(st.names[0]);
        const at = first.byteOffset + 4 * 5; // F32 (makeAdapter writes f32)
        st.close();
        const bytes = await Deno.readFile(`${dir}/${ADAPTER_WEIGHTS}`);
        new DataView(bytes.buffer).setFloat32(at, value, true);
        await Deno.writeFile(`${dir}/${ADAPTER_WEIGHTS}`, bytes);
      };
      await poison("alpha-1e308", (d) => config(d, { lora_alpha: 1e308 }), /LoRA scale of Infinity/);
      await poison("alpha-huge", (d) => config(d, { lora_alpha: 1e9 }), /at most 10000 in magnitude/);
      await poison("nan-weights", (d) => weight(d, NaN), /non-finite value \(NaN\) at element 5/);
      await poison("inf-weights", (d) => weight(d, -Infinity), /non-finite value \(-Infinity\)/);
      assert.equal(await complete(), alone, "tenant b's output is the same as before");
    } finally {
      await s.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
