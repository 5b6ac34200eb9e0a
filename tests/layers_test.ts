// layers_test.ts — imports in server/ run one way, down this list (a module may import its own
// layer and any layer below it; util/ is below everything and imports nothing else of ours), and
// route modules do not import one another, and the web console (api/console/) imports only its own
// files: it is a client of the public API, so it cannot reach past tenancy into the layers below.
// Every import counts: type-only ones, re-exports, dynamic import() and worker URLs too.
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const LAYERS = ["main", "server", "api", "serving", "jobs", "store", "training", "adapters", "engine", "model", "ffi", "util"];

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "server");

/** The layer of a file under server/ (its top folder; main.ts and server.ts are their own). */
function layerOf(file: string): string {
  const top = file.split("/")[0];
  return top.replace(/\.tsx?$/, "");
}

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* tsFiles(p);
    else if (/\.tsx?$/.test(e.name)) yield p;
  }
}

const IMPORT_RES = [
  /\b(?:import|export)\s+(?:type\s+)?[^'";]*?\sfrom\s+["']([^"']+)["']/g, // import/export … from "x"
  /\bimport\s+["']([^"']+)["']/g, // import "x"
  /\bimport\(\s*["']([^"']+)["']\s*\)/g, // import("x")
  /\bnew URL\(\s*["']([^"']+\.tsx?)["']\s*,\s*import\.meta\.url/g, // a worker's module
];

/** The relative specifiers a module imports (packages and node: builtins are not ours). */
function importsOf(source: string): string[] {
  const out: string[] = [];
  for (const re of IMPORT_RES) for (const m of source.matchAll(re)) if (m[1].startsWith(".")) out.push(m[1]);
  return out;
}

Deno.test("layers: every import in server/ runs down the layer order", async () => {
  const violations: string[] = [];
  let files = 0, imports = 0;
  for await (const path of tsFiles(ROOT)) {
    const file = relative(ROOT, path);
    const from = layerOf(file);
    assert.ok(LAYERS.includes(from), `${file}: layer "${from}" is not in the layer order; add it to LAYERS`);
    files++;
    for (const spec of importsOf(await Deno.readTextFile(path))) {
      imports++;
      const target = relative(ROOT, join(dirname(path), spec));
      assert.ok(!target.startsWith(".."), `server/${file} imports ${spec}, outside server/`);
      const to = layerOf(target);
      assert.ok(LAYERS.includes(to), `server/${file} imports ${spec}: layer "${to}" is not in the layer order`);
      if (LAYERS.indexOf(to) < LAYERS.indexOf(from)) {
        violations.push(`server/${file} (${from}) imports server/${target} (${to})`);
      }
      // route modules are siblings: what they share lives in routes/shared.ts
      if (file.startsWith("api/routes/") && target.startsWith("api/routes/") && target !== "api/routes/shared.ts") {
        violations.push(`server/${file} imports the route module server/${target}`);
      }
      if (file.startsWith("api/console/") && !target.startsWith("api/console/")) {
        violations.push(`server/${file} (the console, a client of the public API) imports server/${target}`);
      }
    }
  }
  assert.ok(files > 50 && imports > 200, `found only ${files} files and ${imports} imports: is the parser broken?`);
  assert.deepEqual(violations, [], `imports that run up a layer:\n${violations.join("\n")}`);
});

Deno.test("layers: the import parser sees every form", () => {
  const src = `import { a } from "./a.ts";
import type { B } from "../b.ts";
import {
  c,
  type D,
} from "./c.ts";
export { e } from "./e.ts";
export type { F } from "./f.ts";
import "./g.ts";
const h = await import("./h.ts");
new Worker(new URL("./worker.ts", import.meta.url).href);
import { z } from "zod";`;
  assert.deepEqual(importsOf(src).sort(), ["../b.ts", "./a.ts", "./c.ts", "./e.ts", "./f.ts", "./g.ts", "./h.ts", "./worker.ts"]);
});
