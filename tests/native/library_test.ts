// library_test.ts — loading, ABI check and backend selection of the native library.
import assert from "node:assert/strict";
import { ABI_VERSION } from "../../server/ffi/symbols.ts";
import { buildDir, builtBackends, libraryPath, loadLibrary } from "../../server/ffi/library.ts";
import { NativeLibraryError } from "../../server/ffi/errors.ts";
import { Context } from "../../server/ffi/tensor.ts";

Deno.test("the CPU library loads, reports its backend and ABI, and describes its context", () => {
  assert.ok(builtBackends().includes("cpu"), "run `deno task build` first");
  const lib = loadLibrary({ backend: "cpu" });
  assert.equal(lib.backend, "cpu");
  assert.equal(lib.symbols.ql_abi_version(), ABI_VERSION);
  using ctx = new Context({ backend: "cpu", threads: 2 });
  const info = ctx.describe();
  assert.equal(info.backend, "cpu");
  assert.equal(info.threads, 2);
  assert.ok(info.isa === "avx2" || info.isa === "avx512");
});

Deno.test("a missing library is a clear error", () => {
  assert.throws(
    () => loadLibrary({ path: "/nonexistent/libqlora_cpu.so" }),
    (e: unknown) => e instanceof NativeLibraryError && /not found.*deno task build/.test((e as Error).message),
  );
});

Deno.test("a library of another ABI is refused", async () => {
  // Build a tiny library whose ql_abi_version answers 999.
  const dir = await Deno.makeTempDir();
  const src = `${dir}/fake.c`;
  await Deno.writeTextFile(src, 'unsigned ql_abi_version(void){return 999;}\nconst char* ql_backend_name(void){return "fake";}\n');
  const { code } = await new Deno.Command("cc", { args: ["-shared", "-fPIC", "-o", `${dir}/libfake.so`, src] }).output();
  assert.equal(code, 0);
  assert.throws(
    () => loadLibrary({ path: `${dir}/libfake.so` }),
    (e: unknown) =>
      e instanceof NativeLibraryError && new RegExp(`ABI version 999, this server needs ${ABI_VERSION}:`).test((e as Error).message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("library paths follow the build folder (native/build unless QLORA_BUILD_DIR says otherwise)", () => {
  assert.equal(libraryPath("cudaemu"), `${buildDir()}/libqlora_cudaemu.so`);
  if (!Deno.env.get("QLORA_BUILD_DIR")) assert.match(buildDir(), /native\/build$/);
});

Deno.test("`deno task build` made the CPU and the emulated CUDA libraries", () => {
  // Backend-dependent tests run on every built library; this keeps a missing one from passing
  // unnoticed (QLORA_BACKEND / QLORA_LIB choose one on purpose).
  if (Deno.env.get("QLORA_BACKEND") || Deno.env.get("QLORA_LIB")) return;
  const built = builtBackends();
  assert.ok(built.includes("cpu") && built.includes("cudaemu"), `built: ${built.join(", ")}`);
});
