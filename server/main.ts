// main.ts — `deno task start`: parses flags, loads the native backend, starts Deno.serve.
import { parseArgs } from "node:util";
import { Context } from "./ffi/tensor.ts";
import { createApp } from "./api/app.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "8000" },
    host: { type: "string" },
    threads: { type: "string" },
  },
  strict: true,
});

const ctx = new Context({ threads: values.threads ? Number(values.threads) : 0 });
const app = createApp({ backend: ctx.backend, backendInfo: ctx.describe() });
const hostname = values.host ?? "127.0.0.1";
Deno.serve({ port: Number(values.port), hostname, onListen: ({ hostname, port }) => console.log(`listening on http://${hostname}:${port} (backend ${ctx.backend}, ${ctx.threads} threads)`) }, app.fetch);
