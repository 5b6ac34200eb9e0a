// check_vectors.ts — `deno task check-vectors [FILE]`: runs every case of a reference-vector file
// (default: the repository's tests/fixtures/reference/nf4_vectors.json) through the native
// quantizer; prints one line per case and `N passed, M failed`.
import { Context } from "../server/ffi/tensor.ts";
import { fail, parseCommandLine } from "../server/util/flags.ts";
import { checkVectorFile } from "./lib/vectors.ts";

const DEFAULT_FILE = new URL("../tests/fixtures/reference/nf4_vectors.json", import.meta.url).pathname;
const cmd = {
  name: "deno task check-vectors",
  summary: "Checks the native quantizer bit for bit against a reference-vector file " +
    "(default: tests/fixtures/reference/nf4_vectors.json; the backend follows QLORA_BACKEND / QLORA_LIB).",
  positionals: "[FILE]",
  flags: {},
};
const { positionals } = parseCommandLine(cmd);
const path = positionals[0] ?? DEFAULT_FILE;
let ctx: Context;
try {
  ctx = new Context({ threads: 2 });
} catch (e) {
  fail(cmd, (e as Error).message); // e.g. the native library is not built: `deno task build`
}
let results;
try {
  results = checkVectorFile(ctx, path);
} catch (e) {
  fail(cmd, `cannot read ${path}: ${(e as Error).message}`);
}
ctx.dispose();
for (const r of results) {
  console.log(`${r.ok ? "ok  " : "FAIL"} ${r.name}`);
  for (const f of r.failures) console.log(`     ${f}`);
}
const passed = results.filter((r) => r.ok).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
Deno.exit(passed === results.length ? 0 : 1);
