// build_native.ts — `deno task build [--verbose] [--backend cpu|cudaemu|cuda] [-- MAKE ARGS]`:
// builds the native libraries with make (CPU and the CUDA emulation always; CUDA when nvcc is on
// PATH), one line per library with its time; the compiler's output goes to
// native/build/build.log (its tail is shown on failure), or to the terminal with --verbose.
// Extra arguments after `--` go to make as they are (e.g. `deno task build -- clean`).
import { parseCommandLine } from "../server/util/flags.ts";
import { buildLibraries, INSTALL_COMMAND, missingPackages, NATIVE_DIR, NativeBuildError, wantedBackends } from "../server/ffi/build.ts";
import type { BackendName } from "../server/ffi/library.ts";

const { values, positionals } = parseCommandLine({
  name: "deno task build",
  summary: "Builds native/build/libqlora_{cpu,cudaemu,cuda}.so (CUDA when nvcc is on PATH). Arguments after -- go to make.",
  positionals: "[-- MAKE ARGS]",
  flags: {
    verbose: { type: "boolean", default: false, help: "show the compiler's output (default: kept in native/build/build.log)" },
    backend: {
      type: "string",
      choices: ["cpu", "cudaemu", "cuda"],
      help: "build one library only",
      defaultText: "all that this machine can build",
    },
  },
});

if (positionals.length) {
  const missing = missingPackages([]);
  if (missing.length) {
    console.error(`make needs ${missing.join(", ")}: install with \`${INSTALL_COMMAND}\``);
    Deno.exit(2);
  }
  const { code } = await new Deno.Command("make", { args: ["-C", NATIVE_DIR, ...positionals], stdout: "inherit", stderr: "inherit" })
    .output();
  Deno.exit(code === 0 ? 0 : 2);
}
const backends = values.backend ? [values.backend as BackendName] : wantedBackends("all");
try {
  await buildLibraries(backends, { verbose: values.verbose as boolean });
} catch (e) {
  if (!(e instanceof NativeBuildError)) throw e;
  if (e.detail) console.log(e.detail);
  console.error(e.message);
  Deno.exit(2);
}
