// caller.ts — who is asking: every tenant-scoped service takes a Caller. Authentication makes
// one per request (api/auth.ts); a tenant sees only its own objects, an admin sees every tenant's.

export interface Caller {
  readonly tenant: string;
  readonly admin: boolean;
}

/** A tenant name: it names folders (adapters/<tenant>/, uploads/<tenant>/), so it starts with a
 * letter or digit ("." and ".." are not names) and holds only letters, digits, '.', '_', '-'. */
export const TENANT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const TENANT_RULE = "1-64 of letters, digits, '.', '_', '-', starting with a letter or digit";

/** The caller when the server has no API keys (it then binds to localhost only). */
export const LOCAL_CALLER: Caller = Object.freeze({ tenant: "local", admin: true });
