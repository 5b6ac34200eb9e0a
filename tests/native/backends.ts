// backends.ts — which native backends the backend-dependent tests run on.
// QLORA_BACKEND=name (or QLORA_LIB=path) runs them on that one; otherwise on every library in the
// build folder that loads here (the real CUDA library only where a GPU is present).
import { type BackendName, BACKENDS, builtBackends, libraryPath } from "../../server/ffi/library.ts";
import { Context } from "../../server/ffi/tensor.ts";

export function backendsUnderTest(): BackendName[] {
  const env = Deno.env.get("QLORA_BACKEND");
  if (env) {
    if (!(BACKENDS as readonly string[]).includes(env)) throw new Error(`QLORA_BACKEND=${env} is not a backend`);
    return [env as BackendName];
  }
  const hasGpu = (() => {
    try {
      Deno.statSync("/dev/nvidia0");
      return true;
    } catch {
      return false;
    }
  })();
  return builtBackends().filter((b) => b !== "cuda" || hasGpu);
}

/** A context on the named backend (2 threads unless given). QLORA_BACKEND / QLORA_LIB, when
 * set, override the name: a test that runs on one backend runs on the one asked for. */
export function openContext(backend: BackendName, threads = 2): Context {
  const chosen = (Deno.env.get("QLORA_BACKEND") as BackendName | undefined) ?? backend;
  const path = Deno.env.get("QLORA_LIB") ?? libraryPath(chosen);
  return new Context({ libraryPath: path, threads });
}

/** Registers one Deno test per backend: `${name} [${backend}]`. */
export function testEachBackend(name: string, fn: (ctx: Context, backend: BackendName) => void | Promise<void>): void {
  for (const backend of backendsUnderTest()) {
    Deno.test(`${name} [${backend}]`, async () => {
      const ctx = openContext(backend);
      try {
        await fn(ctx, backend);
      } finally {
        ctx.dispose();
      }
    });
  }
}
