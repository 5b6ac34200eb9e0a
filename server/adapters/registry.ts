// registry.ts — registered adapters, scoped to tenants. An adapter is registered from a folder
// under the server's adapter root (symlinks resolved; nothing outside the root is reachable) or
// uploaded (stored under the data folder). Each registration gets a fresh uid: the key of the
// device cache, so a name registered again never reuses stale weights. Names are unique within a
// tenant; another tenant's adapter is invisible (looks the same as a missing one).
import type { LlamaShape } from "../model/llama.ts";
import type { Caller } from "../util/caller.ts";
import { ClientError } from "../util/errors.ts";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, inspectPeftAdapter, PeftError, readPeftAdapter } from "./peft.ts";

export interface AdapterRecord {
  id: string;
  tenant: string;
  uid: string;
  dir: string;
  source: "path" | "upload";
  created: number; // unix seconds
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  targetModules: string[];
  baseModel: string | null;
  deviceBytes: number;
}

export const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$/;

export class AdapterRegistry {
  readonly #byTenant = new Map<string, Map<string, AdapterRecord>>();
  readonly #byUid = new Map<string, AdapterRecord>();
  #root: string | null = null;

  constructor(
    readonly adapterRoot: string,
    readonly uploadDir: string,
    readonly shape: LlamaShape,
    readonly reservedIds: string[] = [],
    /** Where registrations are kept across restarts (null: memory only). */
    readonly stateFile: string | null = null,
  ) {}

  /** Re-registers what the state file lists; adapters whose files are gone or no longer valid
   * are skipped and reported. */
  async restore(): Promise<{ restored: number; skipped: string[] }> {
    if (!this.stateFile) return { restored: 0, skipped: [] };
    let saved: AdapterRecord[];
    try {
      saved = JSON.parse(await Deno.readTextFile(this.stateFile)).adapters ?? [];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { restored: 0, skipped: [] };
      throw new Error(`${this.stateFile}: ${(e as Error).message}`);
    }
    const skipped: string[] = [];
    let restored = 0;
    for (const r of saved) {
      const caller = { tenant: r.tenant, admin: true };
      try {
        if (r.source === "path") await this.resolvePath(r.dir, caller);
        await this.#add(caller, r.id, r.dir, r.source, r.created);
        restored++;
      } catch (e) {
        skipped.push(`${r.tenant}/${r.id}: ${(e as Error).message}`);
      }
    }
    await this.#save();
    return { restored, skipped };
  }

  #saving: Promise<void> = Promise.resolve();

  /** Writes the state file (writes are serialized, each one the state at its call). */
  #save(): Promise<void> {
    const run = this.#saving.then(() => this.#write());
    this.#saving = run.catch(() => {});
    return run;
  }

  async #write(): Promise<void> {
    if (!this.stateFile) return;
    const all = [...this.#byUid.values()].map((r) => ({ id: r.id, tenant: r.tenant, dir: r.dir, source: r.source, created: r.created }));
    const tmp = `${this.stateFile}.tmp-${crypto.randomUUID()}`;
    await Deno.mkdir(this.stateFile.slice(0, this.stateFile.lastIndexOf("/")) || ".", { recursive: true });
    await Deno.writeTextFile(tmp, JSON.stringify({ adapters: all }, null, 2) + "\n");
    await Deno.rename(tmp, this.stateFile);
  }

  async #realRoot(): Promise<string> {
    if (this.#root === null) {
      await Deno.mkdir(this.adapterRoot, { recursive: true });
      this.#root = await Deno.realPath(this.adapterRoot);
    }
    return this.#root;
  }

  /** Resolves a path (relative to the adapter root, or absolute) to a real folder inside the root
   * (inside <root>/<tenant> for a tenant that is not an admin). */
  async resolvePath(path: string, caller: Caller = { tenant: "", admin: true }): Promise<string> {
    const top = await this.#realRoot();
    const root = caller.admin ? top : `${top}/${caller.tenant}`;
    if (typeof path !== "string" || path.length === 0 || path.includes("\0")) {
      throw new ClientError(400, "lora_path must be a non-empty path", "invalid_path", "lora_path");
    }
    const joined = path.startsWith("/") ? path : `${top}/${path}`;
    // messages name the path as the caller gave it, relative to the root when it is under it: never
    // the server's own folders
    const shown = path.startsWith(top + "/") ? path.slice(top.length + 1) : path;
    // a tenant gets one answer for a missing path and for one outside its folder, so that errors
    // do not tell which paths exist on the server
    const missing = () =>
      new ClientError(
        400,
        `no adapter folder at "${shown}"${caller.admin ? " under the adapter root" : ` in your adapter folder (<root>/${caller.tenant}/)`}`,
        "invalid_path",
        "lora_path",
      );
    let real: string;
    try {
      real = await Deno.realPath(joined);
    } catch {
      throw missing();
    }
    if (real !== root && !real.startsWith(root + "/")) {
      if (!caller.admin) throw missing();
      throw new ClientError(400, `"${shown}" is outside the adapter root`, "path_outside_root", "lora_path");
    }
    if (!(await Deno.stat(real)).isDirectory) throw new ClientError(400, `"${shown}" is not a folder`, "invalid_path", "lora_path");
    // the files themselves must not be symlinks out of the root either
    for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) {
      try {
        const rf = await Deno.realPath(`${real}/${f}`);
        if (!rf.startsWith(root + "/")) {
          if (!caller.admin) throw missing();
          throw new ClientError(400, `"${shown}/${f}" is outside the adapter root`, "path_outside_root", "lora_path");
        }
      } catch (e) {
        if (e instanceof ClientError) throw e;
      }
    }
    return real;
  }

  #checkId(caller: Caller, id: string): void {
    if (typeof id !== "string" || !ID_RE.test(id)) {
      throw new ClientError(400, "adapter ids are 1-128 characters: letters, digits, '.', '_', ':', '-'", "invalid_id", "id");
    }
    if (this.reservedIds.includes(id)) throw new ClientError(409, `"${id}" is the base model's id`, "conflict", "id");
    if (this.#byTenant.get(caller.tenant)?.has(id)) throw new ClientError(409, `adapter "${id}" already exists`, "conflict", "id");
  }

  /** `admit` sees the adapter's device bytes before it is added and may refuse it (a quota). */
  async #add(
    caller: Caller,
    id: string,
    dir: string,
    source: AdapterRecord["source"],
    created?: number,
    admit?: (deviceBytes: number) => void,
  ): Promise<AdapterRecord> {
    let info;
    try {
      info = await inspectPeftAdapter(dir, this.shape);
      // the weights too, as they will be used (every value finite): a bad adapter is refused here,
      // not discovered in a batch it shares with other tenants
      await readPeftAdapter(dir, this.shape, () => {});
    } catch (e) {
      if (e instanceof PeftError) throw new ClientError(400, `invalid adapter: ${e.message}`, "invalid_adapter");
      throw e;
    }
    this.#checkId(caller, id); // again: another registration may have raced us
    admit?.(info.deviceBytes);
    const rec: AdapterRecord = {
      id,
      tenant: caller.tenant,
      uid: crypto.randomUUID(),
      dir,
      source,
      created: created ?? Math.floor(Date.now() / 1000),
      r: info.config.r,
      loraAlpha: info.config.loraAlpha,
      useRslora: info.config.useRslora,
      targetModules: info.moduleNames,
      baseModel: info.config.baseModel,
      deviceBytes: info.deviceBytes,
    };
    let m = this.#byTenant.get(caller.tenant);
    if (!m) this.#byTenant.set(caller.tenant, m = new Map());
    m.set(id, rec);
    this.#byUid.set(rec.uid, rec);
    await this.#save();
    return rec;
  }

  /** Registers the PEFT folder at `path` (inside the adapter root). */
  async register(caller: Caller, id: string, path: string, admit?: (deviceBytes: number) => void): Promise<AdapterRecord> {
    this.#checkId(caller, id);
    const dir = await this.resolvePath(path, caller);
    return await this.#add(caller, id, dir, "path", undefined, admit);
  }

  /** Stores uploaded files under the upload folder and registers them. */
  async upload(
    caller: Caller,
    id: string,
    config: Uint8Array,
    weights: Uint8Array,
    admit?: (deviceBytes: number) => void,
  ): Promise<AdapterRecord> {
    this.#checkId(caller, id);
    const dir = `${this.uploadDir}/${encodeURIComponent(caller.tenant)}/${crypto.randomUUID()}`;
    await Deno.mkdir(dir, { recursive: true });
    try {
      await Deno.writeFile(`${dir}/${ADAPTER_CONFIG}`, config);
      await Deno.writeFile(`${dir}/${ADAPTER_WEIGHTS}`, weights);
      return await this.#add(caller, id, dir, "upload", undefined, admit);
    } catch (e) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** The caller's adapter (an admin also sees every tenant's; their own come first). */
  get(caller: Caller, id: string): AdapterRecord | undefined {
    const own = this.#byTenant.get(caller.tenant)?.get(id);
    if (own || !caller.admin) return own;
    for (const m of this.#byTenant.values()) {
      const r = m.get(id);
      if (r) return r;
    }
    return undefined;
  }

  /** The folder relative to the adapter root (null for uploads). */
  displayPath(rec: AdapterRecord): string | null {
    if (rec.source !== "path" || this.#root === null) return null;
    return rec.dir === this.#root ? "." : rec.dir.slice(this.#root.length + 1);
  }

  byUid(uid: string): AdapterRecord | undefined {
    return this.#byUid.get(uid);
  }

  list(caller: Caller): AdapterRecord[] {
    const out: AdapterRecord[] = [];
    for (const [tenant, m] of this.#byTenant) if (caller.admin || tenant === caller.tenant) out.push(...m.values());
    return out.sort((a, b) => a.created - b.created || a.id.localeCompare(b.id));
  }

  /** Removes the registration (uploaded files are deleted); returns the record. */
  async remove(caller: Caller, id: string): Promise<AdapterRecord> {
    const rec = this.get(caller, id);
    if (!rec) throw new ClientError(404, `adapter "${id}" does not exist`, "adapter_not_found", "id");
    this.#byTenant.get(rec.tenant)?.delete(id);
    this.#byUid.delete(rec.uid);
    if (rec.source === "upload") await Deno.remove(rec.dir, { recursive: true }).catch(() => {});
    await this.#save();
    return rec;
  }
}
