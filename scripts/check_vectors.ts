// check_vectors.ts — `deno task check-vectors FILE`: runs every case of a reference-vector file
// through the native quantizer; prints one line per case and `N passed, M failed`.
import { Context } from "../server/ffi/tensor.ts";
import { checkVectorFile } from "./lib/vectors.ts";

const path = Deno.args[0];
if (!path) {
  console.error("usage: deno task check-vectors FILE");
  Deno.exit(2);
}
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
