// admission.ts — per-tenant admission of generation requests, so that one tenant's flood fills at
// most its share of the server and another tenant's requests are still admitted:
//   - max_concurrent_requests: choices running or waiting at once (the keys file's, limits.ts, or
//     the server's default: half of max-num-seqs + max-queue);
//   - tokens_per_minute: prompt tokens (charged at admission) and completion tokens (charged as
//     each choice finishes) over a rolling minute; a request is admitted while the tenant's last
//     minute plus its prompt stays within the limit.
// Over a limit: 429 naming it, with Retry-After (for tokens: the seconds until enough of the last
// minute's tokens age out). A request that could never be admitted (more choices than the limit,
// a prompt bigger than the minute's tokens) is a 400 instead: retrying cannot help.
import { ClientError } from "../util/errors.ts";
import type { TenantLimits } from "./limits.ts";

/** Tokens per second over the last 60 seconds, for one tenant. */
class MinuteWindow {
  readonly #buckets = new Float64Array(60);
  #second = 0; // the second the newest bucket holds

  #advance(nowSec: number): void {
    const gap = Math.min(60, nowSec - this.#second);
    for (let i = 1; i <= gap; i++) this.#buckets[(this.#second + i) % 60] = 0;
    if (nowSec > this.#second) this.#second = nowSec;
  }

  add(nowSec: number, tokens: number): void {
    this.#advance(nowSec);
    this.#buckets[nowSec % 60] += tokens;
  }

  used(nowSec: number): number {
    this.#advance(nowSec);
    let sum = 0;
    for (const b of this.#buckets) sum += b;
    return sum;
  }

  /** Seconds until `need` more tokens fit under `limit`. */
  secondsUntil(nowSec: number, need: number, limit: number): number {
    let used = this.used(nowSec);
    for (let k = 1; k <= 60; k++) {
      used -= this.#buckets[(nowSec + k) % 60]; // the bucket that ages out k seconds from now
      if (used + need <= limit) return k;
    }
    return 60;
  }
}

export class TenantAdmission {
  readonly #inFlight = new Map<string, number>();
  readonly #tokens = new Map<string, MinuteWindow>();

  constructor(
    readonly defaultMax: number,
    readonly limitsOf: (tenant: string) => Partial<TenantLimits> = () => ({}),
    readonly nowMs: () => number = () => Date.now(),
  ) {}

  /** Counts `n` choices of a request with `promptTokens` in for `tenant`, or throws (429 / 400);
   * returns one release per choice. */
  admit(tenant: string, n: number, promptTokens = 0): (() => void)[] {
    const limits = this.limitsOf(tenant);
    const max = limits.max_concurrent_requests ?? this.defaultMax;
    if (n > max) {
      throw new ClientError(
        400,
        `n = ${n} choices can never run at once: the limit is max_concurrent_requests = ${max}`,
        "tenant_limit",
        "n",
      );
    }
    const now = this.#inFlight.get(tenant) ?? 0;
    if (now + n > max) {
      throw new ClientError(
        429,
        `tenant "${tenant}" has ${now} requests running or waiting; its limit is max_concurrent_requests = ${max}`,
        "tenant_limit",
      );
    }
    const tpm = limits.tokens_per_minute ?? null;
    if (tpm !== null) {
      if (promptTokens > tpm) {
        throw new ClientError(
          400,
          `the prompt is ${promptTokens} tokens; the limit is tokens_per_minute = ${tpm}, so it can never be admitted`,
          "rate_limit_exceeded",
          "messages",
        );
      }
      const sec = Math.floor(this.nowMs() / 1000);
      let w = this.#tokens.get(tenant);
      if (!w) this.#tokens.set(tenant, w = new MinuteWindow());
      const used = w.used(sec);
      if (used + promptTokens > tpm) {
        throw new ClientError(
          429,
          `tenant "${tenant}" used ${used} tokens in the last minute; its limit is tokens_per_minute = ${tpm}`,
          "rate_limit_exceeded",
          null,
          w.secondsUntil(sec, promptTokens, tpm),
        );
      }
      w.add(sec, promptTokens);
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

  /** Charges tokens a tenant's request produced (completion tokens) to its minute. */
  charge(tenant: string, tokens: number): void {
    if (tokens <= 0 || (this.limitsOf(tenant).tokens_per_minute ?? null) === null) return;
    let w = this.#tokens.get(tenant);
    if (!w) this.#tokens.set(tenant, w = new MinuteWindow());
    w.add(Math.floor(this.nowMs() / 1000), tokens);
  }

  inFlight(tenant: string): number {
    return this.#inFlight.get(tenant) ?? 0;
  }

  /** Tokens the tenant used in the last minute (0 when it has no tokens_per_minute). */
  tokensLastMinute(tenant: string): number {
    return this.#tokens.get(tenant)?.used(Math.floor(this.nowMs() / 1000)) ?? 0;
  }
}
