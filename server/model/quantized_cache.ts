// quantized_cache.ts — a cache of quantized bases, so only the first start of a 16/32-bit
// checkpoint pays for quantization (a Llama-2-7B takes ~65 s to quantize; reading 4-bit takes a
// few seconds).
//
// Layout: <root>/<key>/ is a model folder in bitsandbytes' 4-bit safetensors layout (the layout
// loader.ts reads through bnb.ts): model.safetensors holds each quantized linear weight as
// bitsandbytes saves it (packed codes, absmax, quant_map, nested absmax/quant_map, quant_state)
// and every other tensor exactly as the source stores it; config.json is copied, and
// manifest.json records what the key was computed from.
//
// key = sha256 of (the source files' identity: real folder path, and name, size and mtime of each
// *.safetensors, the safetensors index and config.json; quant type; blocksize; double-quant; the
// format version below). A changed source gives a new key; the entry for the old identity of the
// same folder and settings is then stale and removed.
//
// Atomic: an entry is written into <root>/.tmp-<pid>-<uuid>/ and renamed to <root>/<key>/ only
// when complete, so a folder named by a key is always complete. Temp folders left by a process
// that died (or that no live write of this process owns) are swept; where /proc cannot be read
// (Deno allows it only with --allow-all), another process's temp folder is swept after an hour.
import { bnbTensors } from "./bnb.ts";
import { SafetensorsModel, type TensorToWrite, writeSafetensors } from "./safetensors.ts";
import type { Context } from "../ffi/tensor.ts";
import { type LlamaModel, LORA_MODULES } from "./llama.ts";

/** Bumped when what the loader writes or reads here changes meaning. */
export const QUANTIZED_CACHE_FORMAT = 1;

export interface QuantSettings {
  quant: "nf4" | "fp4";
  blocksize: number;
  doubleQuant: boolean;
}

export interface CacheManifest {
  format: number;
  source: string;
  files: { name: string; size: number; mtimeMs: number | null }[];
  quant: string;
  blocksize: number;
  doubleQuant: boolean;
}

/** The key of a source folder under given quantization settings, and what it was computed from. */
export async function quantizedCacheKey(dir: string, q: QuantSettings): Promise<{ key: string; manifest: CacheManifest }> {
  const source = await Deno.realPath(dir);
  const files: CacheManifest["files"] = [];
  for await (const e of Deno.readDir(source)) {
    if (!e.isFile && !e.isSymlink) continue;
    if (!(e.name.endsWith(".safetensors") || e.name === "model.safetensors.index.json" || e.name === "config.json")) continue;
    const st = await Deno.stat(`${source}/${e.name}`);
    files.push({ name: e.name, size: st.size, mtimeMs: st.mtime?.getTime() ?? null });
  }
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const manifest: CacheManifest = {
    format: QUANTIZED_CACHE_FORMAT,
    source,
    files,
    quant: q.quant,
    blocksize: q.blocksize,
    doubleQuant: q.doubleQuant,
  };
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(manifest)));
  const key = [...new Uint8Array(digest)].slice(0, 16).map((b) => b.toString(16).padStart(2, "0")).join("");
  return { key, manifest };
}

/** true when <entry> is a complete cache entry (only renamed folders have a manifest). */
export async function isCacheEntry(entry: string): Promise<boolean> {
  for (const f of ["manifest.json", "model.safetensors", "config.json"]) {
    if (!(await Deno.stat(`${entry}/${f}`).catch(() => null))?.isFile) return false;
  }
  return true;
}

const writing = new Set<string>(); // temp folders this process is writing now

/** Whether a process lives: true, false, or null when /proc cannot be read (Deno allows /proc
 * only with --allow-all). */
function pidAlive(pid: number): boolean | null {
  if (pid === Deno.pid) return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (e) {
    return e instanceof Deno.errors.NotFound ? false : null;
  }
}

/** A temp folder of another process whose liveness cannot be checked counts as abandoned after this. */
const ABANDONED_MS = 3600_000;

/**
 * Removes leftovers under root: temp folders no live write owns, and entries for the same source
 * folder and settings whose key differs from `key` (the source changed since). Returns what went.
 */
export async function sweepQuantizedCache(root: string, manifest: CacheManifest, key: string): Promise<string[]> {
  const removed: string[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(root));
  } catch {
    return removed;
  }
  for (const e of entries) {
    if (!e.isDirectory) continue;
    const path = `${root}/${e.name}`;
    if (e.name.startsWith(".tmp-")) {
      const pid = Number(e.name.split("-")[1]);
      let live = false;
      if (pid === Deno.pid) live = writing.has(path);
      else if (Number.isInteger(pid) && pid > 0) {
        live = pidAlive(pid) ??
          Date.now() - ((await Deno.stat(path).catch(() => null))?.mtime?.getTime() ?? 0) < ABANDONED_MS;
      }
      if (!live) {
        await Deno.remove(path, { recursive: true }).catch(() => {});
        removed.push(path);
      }
      continue;
    }
    if (e.name === key) continue;
    try {
      const m = JSON.parse(await Deno.readTextFile(`${path}/manifest.json`)) as CacheManifest;
      const same = m.source === manifest.source && m.quant === manifest.quant && m.blocksize === manifest.blocksize &&
        m.doubleQuant === manifest.doubleQuant;
      if (same) {
        await Deno.remove(path, { recursive: true }).catch(() => {});
        removed.push(path);
      }
    } catch { /* not ours, or another format: left alone */ }
  }
  return removed;
}

const SOURCE_DTYPE: Record<string, string> = { BF16: "bfloat16", F16: "float16", F32: "float32" };

/**
 * Writes the quantized base of `model` (loaded from sourceDir) as cache entry <root>/<key>/:
 * into a temp folder, renamed when complete. Returns the entry's folder.
 */
export async function writeQuantizedCache(
  ctx: Context,
  root: string,
  key: string,
  manifest: CacheManifest,
  model: LlamaModel,
  sourceDir: string,
  weightName: (layer: number, module: (typeof LORA_MODULES)[number]) => string,
): Promise<string> {
  await Deno.mkdir(root, { recursive: true });
  const final = `${root}/${key}`;
  const tmp = `${root}/.tmp-${Deno.pid}-${crypto.randomUUID()}`;
  writing.add(tmp);
  const st = await SafetensorsModel.open(sourceDir);
  try {
    await Deno.mkdir(tmp);
    const tensors: TensorToWrite[] = [];
    const linear = new Set<string>();
    model.layers.forEach((layer, l) => {
      for (const m of LORA_MODULES) {
        const name = `${weightName(l, m)}.weight`;
        const w = layer.proj[m].weight;
        if (w.kind !== "q4") throw new Error(`${name} is not 4-bit`);
        linear.add(name);
        tensors.push(...bnbTensors(ctx, name, w.q, SOURCE_DTYPE[st.info(name).dtype] ?? "bfloat16"));
      }
    });
    for (const name of st.names) {
      if (linear.has(name)) continue;
      const info = st.info(name);
      tensors.push({ name, dtype: info.dtype, shape: info.shape, data: () => st.read(name) });
    }
    await writeSafetensors(`${tmp}/model.safetensors`, tensors, { format: "pt" });
    await Deno.copyFile(`${sourceDir}/config.json`, `${tmp}/config.json`);
    await Deno.writeTextFile(`${tmp}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
    // a folder under the key's name that is no complete entry (made by hand, or damaged) goes
    if (!(await isCacheEntry(final))) await Deno.remove(final, { recursive: true }).catch(() => {});
    try {
      await Deno.rename(tmp, final);
    } catch (e) {
      // another process finished the same entry first: keep theirs
      if (!(await isCacheEntry(final))) throw e;
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
    return final;
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  } finally {
    writing.delete(tmp);
    st.close();
  }
}
