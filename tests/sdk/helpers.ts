// helpers.ts — fixtures for the SDK tests: a live server (`server/main.ts` in a child process on
// 127.0.0.1, a free port, the tiny model, API keys for two tenants and an admin), random PEFT
// adapters for the tiny model, and a stub HTTP server for retry behaviour.
import { type LlamaShape, LORA_MODULES } from "../../server/model/llama.ts";
import { moduleDims, writePeftAdapter } from "../../server/adapters/peft.ts";
import { STORIES_SHAPE } from "../helpers.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const KEYS = { acme: "sk-acme-test-0001", beta: "sk-beta-test-0002", admin: "sk-admin-test-0003" };

export interface LiveServer {
  /** http://127.0.0.1:PORT/v1 */
  baseURL: string;
  /** The base model's id. */
  model: string;
  dataDir: string;
  adapterRoot: string;
  /** The server's stdout lines so far (structured logs). */
  logs: string[];
  close(): Promise<void>;
}

/** Starts `deno run server/main.ts` on a free port with the default model (models/stories260K). */
export async function startServer(opts: { keys?: boolean; extraArgs?: string[] } = {}): Promise<LiveServer> {
  const dataDir = await Deno.makeTempDir({ prefix: "qlora-sdk-test-" });
  const env: Record<string, string> = { QLORA_API_KEYS: "", QLORA_ADMIN_KEYS: "" };
  if (opts.keys !== false) {
    env.QLORA_API_KEYS = `${KEYS.acme}=acme,${KEYS.beta}=beta`;
    env.QLORA_ADMIN_KEYS = KEYS.admin;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-net",
      "--allow-sys",
      "--allow-run",
      `${ROOT}server/main.ts`,
      "--data",
      dataDir,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--threads",
      "1",
      ...(opts.extraArgs ?? []),
    ],
    env,
    stdout: "piped",
    stderr: "piped",
    cwd: ROOT,
  }).spawn();
  const logs: string[] = [];
  const errText: string[] = [];
  const decoder = new TextDecoderStream();
  const lines = child.stdout.pipeThrough(decoder);
  let resolveListen!: (v: { port: number; model: string }) => void;
  let rejectListen!: (e: Error) => void;
  const listening = new Promise<{ port: number; model: string }>((res, rej) => {
    resolveListen = res;
    rejectListen = rej;
  });
  const pump = (async () => {
    let buf = "";
    for await (const text of lines) {
      buf += text;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        logs.push(line);
        const m = /listening on http:\/\/[^:]+:(\d+)/.exec(line);
        if (m) {
          let model = "tiny";
          try {
            model = JSON.parse(line).model ?? model;
          } catch { /* not JSON */ }
          resolveListen({ port: Number(m[1]), model });
        }
      }
    }
  })();
  const errPump = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) errText.push(text);
  })();
  const status = child.status.then((s) => {
    rejectListen(new Error(`server exited (${s.code}) before listening:\n${logs.join("\n")}\n${errText.join("")}`));
    return s;
  });
  const timer = setTimeout(
    () => rejectListen(new Error(`server did not start in 120 s:\n${logs.join("\n")}\n${errText.join("")}`)),
    120_000,
  );
  let info: { port: number; model: string };
  try {
    info = await listening;
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await Promise.allSettled([status, pump, errPump]);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const adapterRoot = `${dataDir}/adapters`;
  await Deno.mkdir(adapterRoot, { recursive: true });
  return {
    baseURL: `http://127.0.0.1:${info.port}/v1`,
    model: info.model,
    dataDir,
    adapterRoot,
    logs,
    close: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 10_000);
      await Promise.allSettled([status, pump, errPump]);
      clearTimeout(t);
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
}

/** The default model's shape: models/stories260K is the tests' stories260K fixture (same weights). */
export const modelShape = (): LlamaShape => STORIES_SHAPE;

/** Writes a random PEFT adapter (every layer, every module) to `dir`. */
export async function writeAdapter(dir: string, shape: LlamaShape, seed: number, r = 4): Promise<void> {
  let s = seed >>> 0 || 1;
  const rand = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  const weights = [];
  for (let layer = 0; layer < shape.layers; layer++) {
    for (const module of LORA_MODULES) {
      const d = moduleDims(shape, module);
      const a = new Float32Array(r * d.in).map(() => (rand() * 2 - 1) / Math.sqrt(d.in));
      const b = new Float32Array(d.out * r).map(() => (rand() * 2 - 1) * 0.5);
      weights.push({ layer, module, a, b });
    }
  }
  await writePeftAdapter(dir, { r, loraAlpha: r, baseModel: "tiny", weights });
}

/** A stub HTTP server on 127.0.0.1 whose answers the test scripts; it records every request. */
export function stubServer(handler: (req: Request, n: number) => Response | Promise<Response>) {
  const requests: { method: string; url: string; headers: Headers; body: string; at: number }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    requests.push({ method: req.method, url: req.url, headers: req.headers, body: await req.text(), at: performance.now() });
    return await handler(req, requests.length);
  });
  return {
    baseURL: `http://127.0.0.1:${server.addr.port}/v1`,
    requests,
    close: () => server.shutdown(),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

export const jsonResponse = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

export const errorBody = (message: string, type = "invalid_request_error", code: string | null = null, param: string | null = null) => ({
  error: { message, type, param, code },
});

/** Does the server's OpenAPI document (sdk/openapi.json, as generated) have this path? */
export function documentHas(path: string): boolean {
  const doc = JSON.parse(Deno.readTextFileSync(`${ROOT}sdk/openapi.json`));
  return path in (doc.paths ?? {});
}
