// peers.ts — runs the measurements of ../shared/peers (llama.cpp, PyTorch, DRAM bandwidth) in the
// benchmark's own run, so every ratio compares figures taken side by side. The peer scripts are
// called where they lie, never copied.
const SHARED_DIR = new URL("../../../shared/peers/", import.meta.url).pathname;

/** ../shared/peers is not beside this clone: the reference measurements cannot run. */
export class PeersMissingError extends Error {
  override name = "PeersMissingError";
}

/** The peers folder (with a trailing slash); throws PeersMissingError when it is absent. */
export function peersDir(): string {
  try {
    if (Deno.statSync(SHARED_DIR).isDirectory) return SHARED_DIR;
  } catch { /* absent */ }
  throw new PeersMissingError(
    `the benchmarks measure their references with ../shared/peers (readbw.c, llama.cpp, PyTorch scripts), which is not beside this clone (${SHARED_DIR})`,
  );
}
const WORK = "/tmp/qlora-peers";

async function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, env: opts.env, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (out.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${out.code}: ${text.slice(-2000)}`);
  return text;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** DRAM read bandwidth in GB/s (median), measured by shared/peers/readbw.c with `threads` threads. */
export async function readBandwidth(threads = 2, mib = 1024, reps = 7): Promise<number> {
  await Deno.mkdir(WORK, { recursive: true });
  const bin = `${WORK}/readbw`;
  if (!(await exists(bin))) await run("gcc", ["-O3", "-march=native", "-fopenmp", `${peersDir()}readbw.c`, "-o", bin]);
  const text = await run(bin, [String(mib), String(reps)], { env: { OMP_NUM_THREADS: String(threads) } });
  const m = text.match(/median ([\d.]+) GB\/s/);
  if (!m) throw new Error(`readbw printed no median: ${text}`);
  return Number(m[1]);
}

export interface LlamaCppFigures {
  prefillTokS: number;
  decodeTokS: number;
  line: string;
}

async function ensureLlamaCpp(): Promise<string> {
  const dir = `${WORK}/llamacpp`;
  if (!(await exists(`${dir}/node_modules/node-llama-cpp`))) {
    await Deno.mkdir(dir, { recursive: true });
    await run("npm", ["init", "-y"], { cwd: dir });
    await run("npm", ["install", "node-llama-cpp@3.22.1", "@node-llama-cpp/linux-x64@3.22.1", "--omit=optional"], {
      cwd: dir,
      env: { NODE_LLAMA_CPP_SKIP_DOWNLOAD: "true" },
    });
  }
  await Deno.copyFile(`${peersDir()}bench.mjs`, `${dir}/bench.mjs`);
  return dir;
}

async function pythonWithNumpy(): Promise<string> {
  for (const py of ["/usr/bin/python3", "python3"]) {
    try {
      await run(py, ["-c", "import numpy"]);
      return py;
    } catch { /* try the next */ }
  }
  throw new Error("no python3 with numpy (apt-get install -y python3-numpy)");
}

/** llama.cpp Q4_0 CPU prefill/decode tok/s on a random-weight model of the given shape. */
export async function llamaCpp(shape: "135m" | "1.1b" | "7b", threads = 2, pp = 256, tg = 64, reps = 3): Promise<LlamaCppFigures> {
  const dir = await ensureLlamaCpp();
  const gguf = `${dir}/r${shape}.gguf`;
  if (!(await exists(gguf))) await run(await pythonWithNumpy(), [`${peersDir()}make_gguf.py`, shape, gguf, "q4_0"]);
  const line = (await run("node", ["bench.mjs", gguf, String(threads), String(pp), String(tg), String(reps)], { cwd: dir })).trim().split(
    "\n",
  ).pop()!;
  const ppM = line.match(/pp\d+: median ([\d.]+)/), tgM = line.match(/tg\d+: median ([\d.]+)/);
  if (!ppM || !tgM) throw new Error(`llama.cpp bench printed: ${line}`);
  return { prefillTokS: Number(ppM[1]), decodeTokS: Number(tgM[1]), line };
}

/** llama.cpp Q4_0 aggregate decode tok/s of `seqs` sequences generated together in one context
 * (shared/peers/bench_parallel.mjs: each its own `prompt`-token prompt, `tg` new tokens), as
 * llama.cpp's server batches its parallel slots. */
export async function llamaCppParallel(
  shape: "135m" | "1.1b" | "7b",
  threads = 2,
  seqs = 16,
  prompt = 64,
  tg = 32,
  reps = 3,
): Promise<{ tokS: number; line: string }> {
  const dir = await ensureLlamaCpp();
  await Deno.copyFile(`${peersDir()}bench_parallel.mjs`, `${dir}/bench_parallel.mjs`);
  const gguf = `${dir}/r${shape}.gguf`;
  if (!(await exists(gguf))) await run(await pythonWithNumpy(), [`${peersDir()}make_gguf.py`, shape, gguf, "q4_0"]);
  const args = ["bench_parallel.mjs", gguf, String(threads), String(seqs), String(prompt), String(tg), String(reps)];
  const line = (await run("node", args, { cwd: dir })).trim().split("\n").pop()!;
  const m = line.match(/aggregate decode median ([\d.]+) tok\/s/);
  if (!m) throw new Error(`llama.cpp bench_parallel printed: ${line}`);
  return { tokS: Number(m[1]), line };
}

/** PyTorch LoRA training tokens/s from shared/peers/torch_lora.py. */
export async function torchLora(dtype: "bf16" | "fp32", threads = 2): Promise<number> {
  const text = await run("/usr/bin/python3", [`${peersDir()}torch_lora.py`, "--threads", String(threads), "--dtype", dtype], {
    env: { OPENBLAS_NUM_THREADS: "1" },
  });
  const m = text.match(/([\d.]+)\s*tok(?:ens)?\/s/);
  if (!m) throw new Error(`torch_lora.py printed: ${text.slice(-500)}`);
  return Number(m[1]);
}
