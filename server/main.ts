// main.ts — `deno task start [flags]` (`deno task start --help` lists them with their defaults).
// With no --model it serves models/stories260K, the tiny pretrained TinyStories model carried in
// the repository. It builds the native library first when it is missing or older than its
// sources. Every start error is one line on stderr and exit code 2. With no API keys configured
// it binds to localhost only.
import { createServer } from "./server.ts";
import { type Command, fail, parseCommandLine } from "./util/flags.ts";
import { ensureNative, NativeBuildError, wantedBackends } from "./ffi/build.ts";
import { KeyStore } from "./api/auth.ts";
import { DEFAULT_MAX_BATCHED_TOKENS } from "./engine/engine.ts";
import { type KvBudget, parseKvCacheMemory } from "./serving/kv_budget.ts";

const DEFAULT_MODEL = new URL("../models/stories260K", import.meta.url).pathname;
const MODEL_FILES = "config.json, *.safetensors, tokenizer.json (+ tokenizer_config.json, generation_config.json)";

const cmd: Command = {
  name: "deno task start",
  summary: "Starts the OpenAI-compatible server (serving and LoRA training on a 4-bit base); builds the native library first if needed.",
  flags: {
    model: {
      type: "string",
      arg: "DIR",
      help: `a Hugging Face model folder (${MODEL_FILES})`,
      defaultText: "models/stories260K, the built-in TinyStories model",
    },
    "model-id": { type: "string", arg: "ID", help: "the id the API lists", defaultText: "the folder's name" },
    quant: { type: "string", choices: ["nf4", "fp4", "int4", "none"], default: "nf4", help: "quantization of the linear layers at load" },
    activations: {
      type: "string",
      choices: ["f32", "bf16"],
      help: "activations and KV cache",
      defaultText: "bf16 on a 4-bit base, f32 with --quant none",
    },
    port: { type: "int", default: 8000, help: "HTTP port" },
    host: { type: "string", arg: "HOST", default: "127.0.0.1", help: "address to bind (other than localhost only with API keys)" },
    data: { type: "string", arg: "DIR", default: "./data", help: "folder for server state (uploads, jobs, registered adapters)" },
    adapters: { type: "string", arg: "DIR", help: "the adapter root adapters are registered from", defaultText: "<data>/adapters" },
    "api-keys": {
      type: "string",
      arg: "FILE",
      help: 'API keys, {"keys": [{"key", "tenant" | "admin"}]} (also QLORA_API_KEYS, QLORA_ADMIN_KEYS)',
      defaultText: "none: localhost only",
    },
    threads: { type: "int", help: "CPU threads", defaultText: "all cores" },
    "max-num-seqs": { type: "int", default: 64, help: "sequences decoded together" },
    "max-num-batched-tokens": {
      type: "int",
      default: DEFAULT_MAX_BATCHED_TOKENS,
      help: "tokens computed in one step: the running decodes plus prompt chunks (longer prompts are prefilled over several " +
        "steps, so a long prompt never stalls the other streams); at least --max-num-seqs",
    },
    "kv-cache-memory": {
      type: "string",
      arg: "SIZE|FRACTION",
      help: "KV cache budget: bytes with a unit (2GiB, 512MiB) or a fraction of the memory available after loading (0.25, 25%)",
      defaultText: "min(25% of available, 4 GiB)",
    },
    "no-quantized-cache": {
      type: "boolean",
      help: "quantize at every start instead of caching the 4-bit base in <data>/quantized",
    },
    "max-queue": { type: "int", default: 256, help: "waiting requests before 429" },
    "tokenizer-workers": { type: "int", default: 2, help: "workers that tokenize prompts off the HTTP thread" },
    "adapter-cache-mb": { type: "int", default: 1024, help: "device memory for resident adapters" },
    "chat-template": { type: "string", arg: "FILE", help: "a Jinja chat template for models without one", defaultText: "the model's" },
    "drain-timeout": {
      type: "int",
      default: 30,
      help: "on SIGTERM/SIGINT, seconds to let running requests finish; then their streams end with an error event",
    },
  },
};

const { values } = parseCommandLine(cmd);
const str = (k: string) => values[k] as string | undefined;
const num = (k: string) => values[k] as number | undefined;

const say = (msg: string, extra: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ ts: new Date().toISOString(), level: "info", msg, ...extra }));
const oneLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

// 1. the model folder (cheap checks first; the loader checks the rest)
const modelDir = (str("model") ?? DEFAULT_MODEL).replace(/\/+$/, "");
const isDefault = str("model") === undefined;
const dirInfo = await Deno.stat(modelDir).catch(() => null);
if (!dirInfo?.isDirectory) fail(cmd, `model folder ${modelDir} not found (--model DIR: a Hugging Face folder with ${MODEL_FILES})`);
if (!(await Deno.stat(`${modelDir}/config.json`).catch(() => null))?.isFile) {
  fail(cmd, `${modelDir} is not a model folder: no config.json (a Hugging Face folder has ${MODEL_FILES})`);
}
try {
  const config = JSON.parse(await Deno.readTextFile(`${modelDir}/config.json`));
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new Error("not a JSON object");
} catch (e) {
  fail(cmd, `${modelDir}/config.json is not a model config: ${oneLine(e)}`);
}

if (num("max-num-batched-tokens")! < Math.max(1, num("max-num-seqs")!)) {
  fail(cmd, `--max-num-batched-tokens (${num("max-num-batched-tokens")}) must be at least --max-num-seqs (${num("max-num-seqs")})`);
}

// 2. the data folder must be writable
const dataDir = str("data")!.replace(/\/+$/, "") || ".";
try {
  await Deno.mkdir(dataDir, { recursive: true });
  const probe = `${dataDir}/.write-test-${Deno.pid}`;
  await Deno.writeTextFile(probe, "");
  await Deno.remove(probe);
} catch (e) {
  fail(cmd, `cannot write the data folder ${dataDir} (--data DIR): ${oneLine(e)}`);
}

// 3. keys and chat template files
const keysFile = str("api-keys");
if (keysFile !== undefined) {
  try {
    await KeyStore.load(keysFile, () => undefined, []);
  } catch (e) {
    fail(cmd, `bad API keys file ${keysFile} (--api-keys): ${oneLine(e)}`);
  }
}
let chatTemplate: string | null = null;
if (str("chat-template") !== undefined) {
  try {
    chatTemplate = await Deno.readTextFile(str("chat-template")!);
  } catch (e) {
    fail(cmd, `cannot read the chat template ${str("chat-template")}: ${oneLine(e)}`);
  }
}

let kvBudget: KvBudget | undefined;
if (str("kv-cache-memory") !== undefined) {
  try {
    kvBudget = parseKvCacheMemory(str("kv-cache-memory")!);
  } catch (e) {
    fail(cmd, `--kv-cache-memory ${oneLine(e)}`);
  }
}

// 4. the port must be free (checked again when binding)
const port = num("port")!;
const requestedHost = str("host")!;
const portInUse = (e: unknown) => e instanceof Deno.errors.AddrInUse;
if (port !== 0) {
  try {
    Deno.listen({ port, hostname: requestedHost }).close();
  } catch (e) {
    if (portInUse(e)) fail(cmd, `port ${port} is in use on ${requestedHost} (choose another with --port N)`);
    fail(cmd, `cannot listen on ${requestedHost}:${port}: ${oneLine(e)}`);
  }
}

// 5. the native library, built when missing or stale
try {
  await ensureNative(wantedBackends("serve"), { log: (line) => say(line) });
} catch (e) {
  if (e instanceof NativeBuildError && e.detail) console.log(e.detail);
  fail(cmd, oneLine(e));
}

// 6. the model (loaded and quantized in the engine worker, which logs progress)
say(`loading ${modelDir}`, { quant: str("quant"), activations: str("activations") ?? "default" });
let server;
try {
  server = await createServer({
    modelDir,
    modelId: str("model-id"),
    quant: str("quant") as "nf4" | "fp4" | "int4" | "none",
    activations: str("activations") as "f32" | "bf16" | undefined,
    adapterRoot: str("adapters") ?? `${dataDir}/adapters`,
    dataDir,
    threads: num("threads") ?? 0,
    maxNumSeqs: num("max-num-seqs")!,
    maxBatchedTokens: num("max-num-batched-tokens")!,
    kvCacheBytes: kvBudget && "bytes" in kvBudget ? kvBudget.bytes : undefined,
    kvCacheFraction: kvBudget && "fraction" in kvBudget ? kvBudget.fraction : undefined,
    quantizedCache: values["no-quantized-cache"] !== true,
    maxQueue: num("max-queue")!,
    tokenizerWorkers: num("tokenizer-workers")!,
    adapterBudgetBytes: num("adapter-cache-mb")! * 1024 * 1024,
    keysFile,
    chatTemplate,
  });
} catch (e) {
  fail(cmd, `cannot load the model in ${modelDir}: ${oneLine(e)}`);
}

let hostname = requestedHost;
if (server.deps.keys.size === 0) {
  if (!["127.0.0.1", "localhost", "::1"].includes(hostname)) {
    say(
      `no API keys configured: refusing to bind ${hostname}; binding 127.0.0.1 only (set --api-keys FILE or QLORA_API_KEYS / QLORA_ADMIN_KEYS)`,
    );
  } else say("no API keys configured: binding localhost only; every local caller is the admin");
  hostname = "127.0.0.1";
}
const info = server.deps.host.info;
{
  const kv = info.kv, mib = (b: number) => Math.round(b / 1048576);
  const why = kv.source === "default"
    ? `default budget min(25% of ${mib(kv.availableBytes ?? 0)} MiB available, 4 GiB)`
    : kv.source === "fraction"
    ? `${str("kv-cache-memory")} of ${mib(kv.availableBytes ?? 0)} MiB available`
    : kv.source === "bytes"
    ? `budget ${str("kv-cache-memory")}`
    : "explicit blocks";
  say(`kv cache: ${kv.tokens} tokens (${mib(kv.bytes)} MiB)`, {
    blocks: kv.numBlocks,
    block_size: kv.blockSize,
    budget_mib: mib(kv.budgetBytes),
    budget: why,
    ...(kv.capped ? { capped: `max-num-seqs × max_model_len = ${num("max-num-seqs")! * info.maxModelLen} tokens` } : {}),
  });
}
const about = isDefault
  ? `serving ${info.id}, the built-in TinyStories model (260K parameters: it continues short stories; send "Once upon a time"). ` +
    `To serve another model: deno task start --model DIR, a Hugging Face folder with ${MODEL_FILES}`
  : `serving ${info.id} from ${modelDir}`;
let srv: Deno.HttpServer;
try {
  srv = Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      say(`listening on http://${hostname}:${port}: ${about}`, {
        model: info.id,
        quant: info.quant,
        backend: info.backend,
        max_model_len: info.maxModelLen,
        keys: server.deps.keys.size,
      }),
  }, server.app.fetch);
} catch (e) {
  if (portInUse(e)) fail(cmd, `port ${port} is in use on ${hostname} (choose another with --port N)`);
  fail(cmd, `cannot listen on ${hostname}:${port}: ${oneLine(e)}`);
}

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const drain = num("drain-timeout")!;
  say(`shutting down: new connections refused; running requests get ${drain} s to finish`);
  const drained = srv.shutdown();
  const deadline = new Promise<"deadline">((r) => setTimeout(() => r("deadline"), drain * 1000));
  if ((await Promise.race([drained, deadline])) === "deadline") {
    say("drain deadline passed: ending the remaining requests with an error");
  }
  // closing the engine ends any request still running with an error (event), so the drain ends
  await server.close();
  await drained;
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
