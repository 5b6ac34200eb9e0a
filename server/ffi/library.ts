// library.ts — finds and loads the native library once. Only this file calls Deno.dlopen.
//
// Selection: QLORA_LIB=path loads that file; QLORA_BACKEND=cpu|cuda|cudaemu picks a library
// from the build folder (native/build, or QLORA_BUILD_DIR); otherwise the CUDA library when an
// NVIDIA GPU is present and it was built, else the CPU library.
import { ABI_VERSION, type Symbols, symbols } from "./symbols.ts";
import { NativeError, NativeLibraryError } from "./errors.ts";

export type BackendName = "cpu" | "cuda" | "cudaemu";
export const BACKENDS: readonly BackendName[] = ["cpu", "cudaemu", "cuda"];

export type NativeSymbols = Deno.DynamicLibrary<Symbols>["symbols"];

export interface NativeLibrary {
  readonly path: string;
  readonly backend: string;
  readonly symbols: NativeSymbols;
  /** Throws NativeError for a non-zero status, with the library's last error message. */
  check(status: number, fn: string): void;
}

const loaded = new Map<string, NativeLibrary>();

export function buildDir(): string {
  const fromEnv = Deno.env.get("QLORA_BUILD_DIR");
  if (fromEnv) return fromEnv;
  return new URL("../../native/build", import.meta.url).pathname;
}

export function libraryPath(backend: BackendName): string {
  return `${buildDir()}/libqlora_${backend}.so`;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function gpuPresent(): boolean {
  return exists("/dev/nvidia0") || exists("/proc/driver/nvidia/version");
}

/** The backend a plain load picks, following the selection rules above. */
export function defaultBackend(): BackendName {
  const env = Deno.env.get("QLORA_BACKEND");
  if (env) {
    if (!(BACKENDS as readonly string[]).includes(env)) {
      throw new NativeLibraryError(`QLORA_BACKEND=${env} is not one of ${BACKENDS.join(", ")}`);
    }
    return env as BackendName;
  }
  if (gpuPresent() && exists(libraryPath("cuda"))) return "cuda";
  return "cpu";
}

/** Backends whose library file exists in the build folder. */
export function builtBackends(): BackendName[] {
  return BACKENDS.filter((b) => exists(libraryPath(b)));
}

function cString(p: Deno.PointerValue): string {
  return p === null ? "" : new Deno.UnsafePointerView(p).getCString();
}

/** Loads a library (cached per path). With no argument, follows QLORA_LIB / QLORA_BACKEND. */
export function loadLibrary(choice?: { backend?: BackendName; path?: string }): NativeLibrary {
  const path = choice?.path ??
    (choice?.backend ? libraryPath(choice.backend) : (Deno.env.get("QLORA_LIB") ?? libraryPath(defaultBackend())));
  const cached = loaded.get(path);
  if (cached) return cached;
  if (!exists(path)) {
    throw new NativeLibraryError(`native library not found at ${path}: run \`deno task build\` first`);
  }
  // The ABI is checked before binding every symbol, so an old library gets this message rather
  // than a missing-symbol error.
  let abi: number;
  try {
    const probe = Deno.dlopen(path, { ql_abi_version: symbols.ql_abi_version });
    abi = probe.symbols.ql_abi_version();
    probe.close();
  } catch (e) {
    throw new NativeLibraryError(`cannot load ${path}: ${(e as Error).message}`);
  }
  if (abi !== ABI_VERSION) {
    throw new NativeLibraryError(`${path} has ABI version ${abi}, this server needs ${ABI_VERSION}: rebuild with \`deno task build\``);
  }
  let lib: Deno.DynamicLibrary<Symbols>;
  try {
    lib = Deno.dlopen(path, symbols);
  } catch (e) {
    throw new NativeLibraryError(`cannot load ${path}: ${(e as Error).message}`);
  }
  const s = lib.symbols;
  const native: NativeLibrary = {
    path,
    backend: cString(s.ql_backend_name()),
    symbols: s,
    check(status: number, fn: string) {
      if (status !== 0) throw new NativeError(fn, status, cString(s.ql_last_error()));
    },
  };
  loaded.set(path, native);
  return native;
}
