// build_npm.ts — `deno task sdk:build`: compiles sdk/ to sdk/dist as an npm package (ES modules +
// .d.ts, one .js per source file) with TypeScript from the npm registry, and writes its
// package.json, so a Node project can `npm install /path/to/sdk/dist`.
// The sources import each other with .ts extensions (Deno style); rewriteRelativeImportExtensions
// turns those into .js in the output.
// Pinned here rather than in deno.json: only this script uses it.
// deno-lint-ignore no-import-prefix
import ts from "npm:typescript@5.9.3";

const SDK = new URL("./", import.meta.url).pathname;
const DIST = `${SDK}dist`;

const denoJson = JSON.parse(await Deno.readTextFile(`${SDK}deno.json`)) as {
  name: string;
  version: string;
  exports: Record<string, string>;
};

await Deno.remove(DIST, { recursive: true }).catch((e) => {
  if (!(e instanceof Deno.errors.NotFound)) throw e;
});

const options: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  lib: ["lib.es2022.d.ts", "lib.dom.d.ts", "lib.dom.iterable.d.ts", "lib.dom.asynciterable.d.ts"],
  types: [],
  declaration: true,
  sourceMap: true,
  inlineSources: true,
  strict: true,
  rewriteRelativeImportExtensions: true,
  allowImportingTsExtensions: false,
  verbatimModuleSyntax: true,
  isolatedModules: true,
  skipLibCheck: true,
  outDir: DIST,
  rootDir: SDK,
  newLine: ts.NewLineKind.LineFeed,
};
const entries = Object.values(denoJson.exports).map((p) => `${SDK}${p.replace(/^\.\//, "")}`);
const program = ts.createProgram(entries, options);
const emitted = program.emit();
const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
if (diagnostics.length) {
  console.error(ts.formatDiagnosticsWithColorAndContext(diagnostics, {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => SDK,
    getNewLine: () => "\n",
  }));
  Deno.exit(1);
}
// Declaration files keep the .ts specifiers; point them at the emitted files.
for await (const f of walk(DIST)) {
  if (!f.endsWith(".d.ts")) continue;
  const text = await Deno.readTextFile(f);
  const fixed = text.replace(/((?:from|import)\s*\(?\s*["'])(\.{1,2}\/[^"']+?)\.ts(["'])/g, "$1$2.js$3");
  if (fixed !== text) await Deno.writeTextFile(f, fixed);
}
const outside = program.getSourceFiles().filter((f) => !f.isDeclarationFile && !f.fileName.startsWith(SDK));
if (outside.length) throw new Error(`the SDK must import nothing outside sdk/: ${outside.map((f) => f.fileName).join(", ")}`);

const js = (p: string) => p.replace(/^\.\//, "./").replace(/\.ts$/, ".js");
const dts = (p: string) => p.replace(/^\.\//, "./").replace(/\.ts$/, ".d.ts");
const exportsMap: Record<string, unknown> = {};
for (const [k, v] of Object.entries(denoJson.exports)) exportsMap[k] = { types: dts(v), import: js(v), default: js(v) };
exportsMap["./openapi.json"] = "./openapi.json";
exportsMap["./package.json"] = "./package.json";

const pkg = {
  name: denoJson.name,
  version: denoJson.version,
  description:
    "TypeScript client for the qlora server: OpenAI-compatible chat and completions with per-request LoRA adapters, adapters, files and QLoRA fine-tuning jobs.",
  type: "module",
  main: js(denoJson.exports["."]),
  module: js(denoJson.exports["."]),
  types: dts(denoJson.exports["."]),
  exports: exportsMap,
  sideEffects: false,
  engines: { node: ">=20" },
  files: ["**/*"],
};
await Deno.writeTextFile(`${DIST}/package.json`, JSON.stringify(pkg, null, 2) + "\n");
await Deno.copyFile(`${SDK}openapi.json`, `${DIST}/openapi.json`);
await Deno.copyFile(`${SDK}README.md`, `${DIST}/README.md`).catch(() => {});

let files = 0;
for await (const _ of walk(DIST)) files++;
console.log(`built ${denoJson.name}@${denoJson.version} into sdk/dist (${files} files)`);

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) yield* walk(`${dir}/${e.name}`);
    else yield `${dir}/${e.name}`;
  }
}
