// assets.ts — the console's static files and the third-party browser bundles it serves itself, so
// that the console and /docs work on a machine without internet: uPlot (charts) and Scalar's
// standalone API reference come from their npm packages (pinned in deno.json), read from Deno's
// npm cache where the package resolves; the console's own script and style sheet from static/.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// These imports are never called: a statically known import() is how Deno learns that the
// packages belong in the module graph, so that `deno run` downloads them before require.resolve
// below looks for their files.
export const graphEdges = [() => import("uplot"), () => import("@scalar/api-reference")];

const require = createRequire(import.meta.url);
const STATIC = fileURLToPath(new URL("./static/", import.meta.url));

type Asset = { file: () => string; type: string };

/** The package's root folder, from the file its main entry resolves to. */
function packageRoot(name: string): string {
  let dir = dirname(require.resolve(name));
  while (!dir.endsWith(`/${name}`) && !/\/\d+\.\d+\.\d+[^/]*$/.test(dir)) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the folder of npm package ${name}`);
    dir = up;
  }
  return dir;
}

const JS = "text/javascript; charset=utf-8", CSS = "text/css; charset=utf-8";

export const ASSETS: Record<string, Asset> = {
  "console.js": { file: () => join(STATIC, "console.js"), type: JS },
  "console.css": { file: () => join(STATIC, "console.css"), type: CSS },
  "uplot.js": { file: () => join(packageRoot("uplot"), "dist/uPlot.iife.min.js"), type: JS },
  "uplot.css": { file: () => join(packageRoot("uplot"), "dist/uPlot.min.css"), type: CSS },
  "scalar.js": { file: () => join(packageRoot("@scalar/api-reference"), "dist/browser/standalone.js"), type: JS },
};

const cache = new Map<string, Uint8Array<ArrayBuffer>>();

/** The asset's bytes (read once; null for an unknown name). A missing package file throws, with its path. */
export async function readAsset(name: string): Promise<{ bytes: Uint8Array<ArrayBuffer>; type: string } | null> {
  const a = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
  if (!a) return null;
  let bytes = cache.get(name);
  if (!bytes) {
    // read once: Scalar's bundle is 4 MB
    bytes = await Deno.readFile(a.file());
    cache.set(name, bytes);
  }
  return { bytes, type: a.type };
}
