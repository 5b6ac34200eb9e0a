// check_vectors.ts — `deno task check-vectors [FILE]`: runs every case of a reference-vector file
// (default: the repository's tests/fixtures/reference/nf4_vectors.json) through the native
// quantizer; prints one line per case and `N passed, M failed`.
import { Context } from "../server/ffi/tensor.ts";
import { parseCommandLine } from "../server/util/flags.ts";
import { checkVectorFile } from "./lib/vectors.ts";

const DEFAULT_FILE = new URL("../tests/fixtures/reference/nf4_vectors.json", import.meta.url).pathname;
const { positionals } = parseCommandLine({
  name: "deno task check-vectors",
  summary: "Checks the native quantizer bit for bit against a reference-vector file " +
    "(default: tests/fixtures/reference/nf4_vectors.json; the backend follows QLORA_BACKEND / QLORA_LIB).",
  positionals: "[FILE]",
  flags: {},
});
const path = positionals[0] ?? DEFAULT_FILE;
using ctx = new Context({ threads: 2 });
let results;
try {
  results = checkVectorFile(ctx, path);
} catch (e) {
  console.error(`cannot read ${path}: ${(e as Error).message}`);
  Deno.exit(2);
}
for (const r of results) {
  console.log(`${r.ok ? "ok  " : "FAIL"} ${r.name}`);
  for (const f of r.failures) console.log(`     ${f}`);
}
const passed = results.filter((r) => r.ok).length;
console.log(`${passed} passed, ${results.length - passed} failed`);
Deno.exit(passed === results.length ? 0 : 1);
