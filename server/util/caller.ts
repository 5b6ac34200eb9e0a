// caller.ts — who is asking: every tenant-scoped service takes a Caller. Authentication makes
// one per request (api/auth.ts); a tenant sees only its own objects, an admin sees every tenant's.

export interface Caller {
  readonly tenant: string;
  readonly admin: boolean;
}

/** The caller when the server has no API keys (it then binds to localhost only). */
export const LOCAL_CALLER: Caller = Object.freeze({ tenant: "local", admin: true });
