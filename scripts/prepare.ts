// prepare.ts — the first step of `deno task test`: builds the native libraries the tests run on
// (CPU, the CUDA emulation, CUDA when nvcc is present) when missing or older than their sources.
// A missing system package or a failed build is one line (after the build log's tail), exit 2.
import { parseCommandLine } from "../server/util/flags.ts";
import { ensureNative, NativeBuildError, wantedBackends } from "../server/ffi/build.ts";

parseCommandLine({
  name: "scripts/prepare.ts",
  summary: "Builds the native libraries the tests need when they are missing or older than native/src (run by `deno task test`).",
  flags: {},
});
try {
  await ensureNative(wantedBackends("all"));
} catch (e) {
  if (!(e instanceof NativeBuildError)) throw e;
  if (e.detail) console.log(e.detail);
  console.error(e.message);
  Deno.exit(2);
}
