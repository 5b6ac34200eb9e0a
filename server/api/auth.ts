// auth.ts — API keys (Bearer): each key belongs to a tenant; admin keys manage every tenant.
// Keys come from a JSON file ({"keys": [{"key": "sk-…", "tenant": "acme"}, {"key": "sk-…",
// "admin": true}]}, each key entry optionally with its tenant's limits, and "defaults" for every
// tenant: limits.ts) and/or the environment (QLORA_API_KEYS="sk-a=acme,sk-b=beta",
// QLORA_ADMIN_KEYS="sk-root"). Keys are kept as SHA-256 digests. With no keys at all, every caller
// is the local admin (the server then binds to localhost only).
import type { MiddlewareHandler } from "hono";
import { type Caller, LOCAL_CALLER, TENANT_RE, TENANT_RULE } from "../util/caller.ts";
import { ClientError } from "../util/errors.ts";
import { LIMIT_DEFAULTS, parseLimits, type TenantLimits, tighter } from "./limits.ts";

async function digest(key: string): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
  return Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A key and, optionally, its tenant's limits (limits.ts). */
export type KeySpec = { key: string; tenant?: string; admin?: boolean } & Partial<TenantLimits>;

export class KeyStore {
  readonly #keys = new Map<string, Caller>();
  readonly #limits = new Map<string, Partial<TenantLimits>>();
  #defaults: TenantLimits = { ...LIMIT_DEFAULTS };

  get size(): number {
    return this.#keys.size;
  }

  static async create(specs: KeySpec[], defaults: Partial<TenantLimits> = {}): Promise<KeyStore> {
    const s = new KeyStore();
    s.#defaults = { ...LIMIT_DEFAULTS, ...parseLimits(defaults, "defaults") };
    for (const k of specs) {
      if (typeof k.key !== "string" || k.key.length < 8) throw new Error("API keys must be strings of at least 8 characters");
      const admin = k.admin === true;
      const tenant = admin ? (k.tenant ?? "admin") : k.tenant;
      if (!tenant || !TENANT_RE.test(tenant)) {
        throw new Error(`key for tenant ${JSON.stringify(k.tenant)}: tenant names are ${TENANT_RULE}`);
      }
      s.#keys.set(await digest(k.key), { tenant, admin });
      const set = parseLimits(k as Record<string, unknown>, `key for tenant ${tenant}`, ["key", "tenant", "admin"]);
      s.#limits.set(tenant, tighter(s.#limits.get(tenant) ?? {}, set));
    }
    return s;
  }

  /** Keys from a config file (optional) and the environment. */
  static async load(
    file: string | undefined,
    env: (name: string) => string | undefined = (n) => Deno.env.get(n),
    extra: KeySpec[] = [],
  ): Promise<KeyStore> {
    const specs: KeySpec[] = [...extra];
    let defaults: Partial<TenantLimits> = {};
    if (file) {
      const json = JSON.parse(await Deno.readTextFile(file));
      if (!Array.isArray(json?.keys)) throw new Error(`${file}: expected {"keys": [{"key", "tenant" | "admin"}]}`);
      specs.push(...json.keys);
      if (json.defaults !== undefined) {
        if (typeof json.defaults !== "object" || json.defaults === null) throw new Error(`${file}: "defaults" must be an object of limits`);
        defaults = json.defaults;
      }
    }
    for (const part of (env("QLORA_API_KEYS") ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
      const i = part.lastIndexOf("=");
      if (i <= 0) throw new Error("QLORA_API_KEYS must look like key=tenant,key=tenant");
      specs.push({ key: part.slice(0, i), tenant: part.slice(i + 1) });
    }
    for (const key of (env("QLORA_ADMIN_KEYS") ?? "").split(",").map((s) => s.trim()).filter(Boolean)) specs.push({ key, admin: true });
    return await KeyStore.create(specs, defaults);
  }

  /** The tenant's limits: its keys' settings over the defaults. */
  limitsOf(tenant: string): TenantLimits {
    return { ...this.#defaults, ...this.#limits.get(tenant) };
  }

  async lookup(key: string): Promise<Caller | null> {
    return this.#keys.get(await digest(key)) ?? null;
  }
}

/** Sets c.var.principal from the Authorization header (401 when keys exist and it is missing or wrong). */
export function authMiddleware(keys: KeyStore): MiddlewareHandler<{ Variables: { principal: Caller } }> {
  return async (c, next) => {
    if (keys.size === 0) {
      c.set("principal", LOCAL_CALLER);
      return await next();
    }
    const h = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (!m) {
      throw new ClientError(401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_api_key");
    }
    const p = await keys.lookup(m[1]);
    if (!p) throw new ClientError(401, "incorrect API key", "invalid_api_key");
    c.set("principal", p);
    await next();
  };
}
