// build.ts — builds the native libraries when they are missing or older than their sources, so
// that `deno task start` and `deno task test` work on a fresh clone. One line per library (and the
// time it took); the compiler's output goes to native/build/build.log, whose tail is shown when the
// build fails. Missing system packages are named with the command that installs them.
import { type BackendName, buildDir } from "./library.ts";

export const NATIVE_DIR = new URL("../../native", import.meta.url).pathname;
export const INSTALL_COMMAND = "apt-get install -y g++ make libdnnl-dev";

/** The build cannot run or failed: one line (plus, for a failure, the log's tail in `detail`). */
export class NativeBuildError extends Error {
  override name = "NativeBuildError";
  constructor(message: string, readonly detail = "") {
    super(message);
  }
}

function stat(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

function newestIn(path: string): number {
  const s = stat(path);
  if (!s) return 0;
  if (!s.isDirectory) return s.mtime?.getTime() ?? 0;
  let newest = s.mtime?.getTime() ?? 0;
  for (const e of Deno.readDirSync(path)) newest = Math.max(newest, newestIn(`${path}/${e.name}`));
  return newest;
}

/** Newest modification time (ms) of native/src, native/include and native/Makefile. */
export function newestSource(nativeDir = NATIVE_DIR): number {
  return Math.max(newestIn(`${nativeDir}/src`), newestIn(`${nativeDir}/include`), newestIn(`${nativeDir}/Makefile`));
}

/** The backends among `backends` whose library is missing or older than the newest source. */
export function staleLibraries(backends: BackendName[], dir = buildDir(), nativeDir = NATIVE_DIR): BackendName[] {
  const newest = newestSource(nativeDir);
  return backends.filter((b) => {
    const s = stat(`${dir}/libqlora_${b}.so`);
    return !s || (s.mtime?.getTime() ?? 0) < newest;
  });
}

function onPath(tool: string): boolean {
  for (const d of (Deno.env.get("PATH") ?? "").split(":")) {
    if (d && stat(`${d}/${tool}`)?.isFile) return true;
  }
  return false;
}

export function nvccAvailable(): boolean {
  const nvcc = Deno.env.get("NVCC");
  return nvcc ? stat(nvcc)?.isFile === true : onPath("nvcc");
}

function gpuPresent(): boolean {
  return stat("/dev/nvidia0") !== null || stat("/proc/driver/nvidia/version") !== null;
}

function dnnlHeader(): boolean {
  const dirs = [
    "/usr/include",
    "/usr/local/include",
    ...(Deno.env.get("CPATH") ?? "").split(":"),
    ...(Deno.env.get("CPLUS_INCLUDE_PATH") ?? "").split(":"),
  ];
  return dirs.some((d) => d && stat(`${d}/oneapi/dnnl/dnnl.h`)?.isFile);
}

/** System packages the build of `backends` needs and this machine lacks (empty: all there). */
export function missingPackages(backends: BackendName[]): string[] {
  const missing: string[] = [];
  if (!onPath(Deno.env.get("CXX") ?? "g++")) missing.push("g++");
  if (!onPath("make")) missing.push("make");
  if (backends.includes("cpu") && !dnnlHeader()) missing.push("libdnnl-dev (oneapi/dnnl/dnnl.h)");
  return missing;
}

/**
 * The libraries a command needs: "serve" the one the server will load (QLORA_BACKEND, else CUDA
 * when a GPU and nvcc are present, else CPU); "all" every library `make` builds here (CPU, the
 * CUDA emulation, and CUDA when nvcc is present), which the tests run on.
 */
export function wantedBackends(kind: "serve" | "all"): BackendName[] {
  const env = Deno.env.get("QLORA_BACKEND") as BackendName | undefined;
  if (kind === "serve") {
    if (env === "cpu" || env === "cuda" || env === "cudaemu") return [env];
    return gpuPresent() && nvccAvailable() ? ["cuda"] : ["cpu"];
  }
  return nvccAvailable() ? ["cpu", "cudaemu", "cuda"] : ["cpu", "cudaemu"];
}

export interface BuildOptions {
  /** Stream the compiler's output instead of keeping it in build.log. */
  verbose?: boolean;
  /** One line per library built (default console.log). */
  log?: (line: string) => void;
  /** Rebuild even when up to date (make still skips what is current). */
  force?: boolean;
}

/** Runs make for each backend (one line per library with its time); throws NativeBuildError. */
export async function buildLibraries(backends: BackendName[], o: BuildOptions = {}): Promise<void> {
  const log = o.log ?? ((l: string) => console.log(l));
  const missing = missingPackages(backends);
  if (missing.length) {
    throw new NativeBuildError(`the native build needs ${missing.join(", ")}: install with \`${INSTALL_COMMAND}\``);
  }
  const dir = buildDir();
  await Deno.mkdir(dir, { recursive: true });
  const logPath = `${dir}/build.log`;
  const jobs = String(navigator.hardwareConcurrency || 2);
  if (!o.verbose) await Deno.writeTextFile(logPath, "");
  for (const b of backends) {
    const args = ["-C", NATIVE_DIR, `-j${jobs}`, `BUILD=${dir}`, b];
    const t0 = performance.now();
    const wasStale = staleLibraries([b], dir).length > 0;
    let code: number;
    if (o.verbose) {
      log(`make ${args.join(" ")}`);
      code = (await new Deno.Command("make", { args, stdout: "inherit", stderr: "inherit" }).output()).code;
    } else {
      const out = await new Deno.Command("make", { args, stdout: "piped", stderr: "piped" }).output();
      code = out.code;
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      await Deno.writeTextFile(logPath, `$ make ${args.join(" ")}\n${text}`, { append: true });
      if (code !== 0) {
        const tail = text.trimEnd().split("\n").slice(-25).join("\n");
        throw new NativeBuildError(`building libqlora_${b}.so failed (make exited ${code}); full output in ${logPath}`, tail);
      }
    }
    if (code !== 0) throw new NativeBuildError(`building libqlora_${b}.so failed (make exited ${code})`);
    // make found nothing to do although a file under native/ is newer (one no rule uses): mark
    // the library current so that the next start does not run make again.
    const lib = `${dir}/libqlora_${b}.so`;
    if (staleLibraries([b], dir).length) Deno.utimeSync(lib, new Date(), new Date());
    const took = `${((performance.now() - t0) / 1000).toFixed(1)} s`;
    log(wasStale ? `native: libqlora_${b}.so built in ${took}` : `native: libqlora_${b}.so is up to date (${took})`);
  }
}

/**
 * Builds the libraries among `backends` that are missing or older than their sources (nothing
 * when QLORA_LIB names a library file). Returns the backends it built.
 */
export async function ensureNative(backends: BackendName[], o: BuildOptions = {}): Promise<BackendName[]> {
  if (Deno.env.get("QLORA_LIB")) return [];
  const stale = o.force ? backends : staleLibraries(backends);
  if (stale.length === 0) return [];
  const log = o.log ?? ((l: string) => console.log(l));
  const missing = missingPackages(stale);
  if (missing.length) throw new NativeBuildError(`the native build needs ${missing.join(", ")}: install with \`${INSTALL_COMMAND}\``);
  if (!o.force) {
    log(`native: building ${stale.map((b) => `libqlora_${b}.so`).join(", ")} (missing or older than native/src; a minute or two)`);
  }
  await buildLibraries(stale, o);
  return stale;
}
