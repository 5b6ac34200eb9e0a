// structured_helpers.ts — the tiny random-weight model served over real HTTP with two adapters,
// for the structured-output and tool-calling tests.
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createServer, type Server } from "../../server/server.ts";
import { llamaShape } from "../../server/model/loader.ts";
import { loadModelConfig } from "../../server/model/config.ts";
import { makeAdapter, tinyModel } from "../helpers.ts";

export const opts = { sanitizeOps: false, sanitizeResources: false };

/** The tiny model served over HTTP, with adapters ad-a and ad-b registered; `chatTemplate`
 * replaces the model's own (a copy of the model folder with that chat_template.jinja and a
 * 2048-token context). */
export async function tinyServer(extra: { chatTemplate?: string } = {}) {
  const root = await Deno.makeTempDir({ prefix: "qlora-structured-" });
  let modelDir = await tinyModel();
  if (extra.chatTemplate) {
    const copy = `${root}/model`;
    await Deno.mkdir(copy);
    for await (const e of Deno.readDir(modelDir)) await Deno.copyFile(`${modelDir}/${e.name}`, `${copy}/${e.name}`);
    await Deno.writeTextFile(`${copy}/chat_template.jinja`, extra.chatTemplate);
    // tools written into the prompt need more than the tiny model's 512 positions
    const config = JSON.parse(await Deno.readTextFile(`${copy}/config.json`));
    await Deno.writeTextFile(`${copy}/config.json`, JSON.stringify({ ...config, max_position_embeddings: 2048 }));
    modelDir = copy;
  }
  const shape = llamaShape(await loadModelConfig(modelDir));
  await makeAdapter(`${root}/adapters/a`, shape, { seed: 5, bScale: 2 });
  await makeAdapter(`${root}/adapters/b`, shape, { seed: 6, bScale: 2 });
  const s: Server = await createServer({
    modelDir,
    quant: "none",
    adapterRoot: `${root}/adapters`,
    dataDir: `${root}/data`,
    threads: 1,
    maxNumSeqs: 48,
    maxQueue: 512,
    tenantMaxRequests: 512,
    env: false,
    log: null,
  });
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
  const url = `http://127.0.0.1:${srv.addr.port}`;
  for (const [id, path] of [["ad-a", "a"], ["ad-b", "b"]]) {
    const r = await fetch(`${url}/v1/adapters`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id, path }),
    });
    assert.equal(r.status, 201, await r.text());
  }
  const modelId = s.deps.host.info.id;
  return {
    url,
    modelId,
    modelDir,
    maskStats: () => s.deps.host.grammarStats(),
    client: new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 }),
    post: (path: string, body: unknown) =>
      fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    close: async () => {
      await srv.shutdown();
      await s.close();
    },
  };
}
