// main.ts — `deno task start [--model DIR] [--quant Q] [--port N] [--host H] [--adapters DIR]
// [--data DIR] [--api-keys FILE] [--threads N] [--max-num-seqs N] [--chat-template FILE]`.
// With no --model it serves the small model scripts/make_model.ts makes (created once under the
// data folder). With no API keys configured it binds to localhost only.
import { parseArgs } from "node:util";
import { createServer } from "./server.ts";
import { makeModel } from "./model/make_model.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    "model-id": { type: "string" },
    quant: { type: "string", default: "nf4" },
    port: { type: "string", default: "8000" },
    host: { type: "string" },
    adapters: { type: "string" },
    data: { type: "string", default: "./data" },
    "api-keys": { type: "string" },
    threads: { type: "string" },
    "max-num-seqs": { type: "string", default: "64" },
    "max-queue": { type: "string", default: "256" },
    "adapter-cache-mb": { type: "string", default: "1024" },
    "chat-template": { type: "string" },
  },
  strict: true,
});

const say = (msg: string, extra: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ ts: new Date().toISOString(), level: "info", msg, ...extra }));
const quant = values.quant as "nf4" | "fp4" | "int4" | "none";
if (!["nf4", "fp4", "int4", "none"].includes(quant)) {
  console.error(`--quant must be nf4, fp4, int4 or none (got ${values.quant})`);
  Deno.exit(2);
}
const dataDir = values.data!.replace(/\/+$/, "");
let modelDir = values.model;
if (!modelDir) {
  modelDir = `${dataDir}/models/tiny`;
  let exists = false;
  try {
    exists = Deno.statSync(`${modelDir}/config.json`).isFile;
  } catch { /* not made yet */ }
  if (!exists) {
    say("no --model given: making the tiny default model", { dir: modelDir });
    await makeModel({ shape: "tiny", out: modelDir });
  }
  say("no --model given: serving the tiny default model made by scripts/make_model.ts (random weights, for trying the API)", {
    dir: modelDir,
  });
}
const int = (v: string | undefined, name: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer`);
    Deno.exit(2);
  }
  return n;
};

const server = await createServer({
  modelDir,
  modelId: values["model-id"],
  quant,
  adapterRoot: values.adapters ?? `${dataDir}/adapters`,
  dataDir,
  threads: values.threads ? int(values.threads, "threads") : 0,
  maxNumSeqs: int(values["max-num-seqs"], "max-num-seqs"),
  maxQueue: int(values["max-queue"], "max-queue"),
  adapterBudgetBytes: int(values["adapter-cache-mb"], "adapter-cache-mb") * 1024 * 1024,
  keysFile: values["api-keys"],
  chatTemplate: values["chat-template"] ? await Deno.readTextFile(values["chat-template"]) : null,
});

let hostname = values.host ?? "127.0.0.1";
if (server.deps.keys.size === 0) {
  if (!["127.0.0.1", "localhost", "::1"].includes(hostname)) {
    say(
      `no API keys configured: refusing to bind ${hostname}; binding 127.0.0.1 only (set --api-keys FILE or QLORA_API_KEYS / QLORA_ADMIN_KEYS)`,
    );
  } else say("no API keys configured: binding localhost only; every local caller is the admin");
  hostname = "127.0.0.1";
}
const info = server.deps.host.info;
const srv = Deno.serve({
  port: int(values.port, "port"),
  hostname,
  onListen: ({ hostname, port }) =>
    say(`listening on http://${hostname}:${port}`, {
      model: info.id,
      quant: info.quant,
      backend: info.backend,
      max_model_len: info.maxModelLen,
      keys: server.deps.keys.size,
    }),
}, server.app.fetch);

const stop = async () => {
  say("shutting down");
  await srv.shutdown();
  await server.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
