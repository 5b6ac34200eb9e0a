// admission.ts — per-tenant admission: each tenant may have at most so many generation requests
// (choices) running or waiting at once, so that one tenant's flood fills at most its share of the
// server and another tenant's requests are still admitted. The limit is per key in the keys file
// (`max_concurrent_requests`) or the server's default (half of max-num-seqs + max-queue). Over it,
// a 429 names the limit (Retry-After, as every 429).
import { ClientError } from "../util/errors.ts";

export class TenantAdmission {
  readonly #inFlight = new Map<string, number>();

  constructor(readonly defaultMax: number, readonly limitOf: (tenant: string) => number | undefined = () => undefined) {}

  /** Counts `n` requests in for `tenant`, or throws 429; returns one release per request. */
  admit(tenant: string, n: number): (() => void)[] {
    const max = this.limitOf(tenant) ?? this.defaultMax;
    const now = this.#inFlight.get(tenant) ?? 0;
    if (now + n > max) {
      throw new ClientError(
        429,
        `tenant "${tenant}" has ${now} requests running or waiting; its limit is max_concurrent_requests = ${max}`,
        "tenant_limit",
      );
    }
    this.#inFlight.set(tenant, now + n);
    return Array.from({ length: n }, () => {
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (this.#inFlight.get(tenant) ?? 1) - 1;
        if (left > 0) this.#inFlight.set(tenant, left);
        else this.#inFlight.delete(tenant);
      };
    });
  }

  inFlight(tenant: string): number {
    return this.#inFlight.get(tenant) ?? 0;
  }
}
