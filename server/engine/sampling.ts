// sampling.ts — next-token selection from one row of logits (Float32Array, vocab ≤ 256k).
//
// Pipeline, in order (the order of Hugging Face's generate and vLLM):
//   1. logit_bias (OpenAI: added to logits)
//   2. repetition penalty (HF: over prompt + output tokens; logit > 0 → logit / p, else logit · p)
//   3. presence / frequency penalties (OpenAI: over output tokens only;
//      logit −= count · frequency_penalty + (count > 0) · presence_penalty)
//   4. temperature (temperature 0 → greedy argmax; ties go to the lowest id)
//   5. top_k, then top_p (smallest set of most likely tokens whose mass ≥ top_p), then min_p
//      (drop tokens with p < min_p · p_max); at least one token always survives
//   6. draw from the renormalized survivors with the request's seeded RNG.
//
// A grammar's mask (engine/grammar.ts: a bitmask of the tokens the grammar allows next) drops the
// other tokens after step 4, so that whatever the other settings keep, only allowed tokens are drawn
// (top_k / top_p / min_p then choose among the allowed ones).
//
// Logprobs are the log-softmax of the logits after steps 1–4 (penalties and temperature applied,
// temperature 0 counted as 1), BEFORE the truncation of step 5 and before a grammar's mask: every
// token has a finite logprob (the model's view, as the grammar does not change the model).
//
// Top-k and top-p use partial selection (a bounded heap), not a sort of the whole vocabulary;
// top-p grows its candidate set geometrically from 64 and only sorts everything in the worst case.

export interface SamplingParams {
  /** 0 → greedy. */
  temperature: number;
  /** ≤ 0 → disabled. */
  topK: number;
  /** 1 → disabled. */
  topP: number;
  /** 0 → disabled. */
  minP: number;
  /** 1 → disabled. */
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /** token id → additive bias. */
  logitBias: Record<number, number> | null;
  /** null → a random seed is drawn. */
  seed: number | null;
  /** Number of top logprobs to return per token (0..20); null → no logprobs at all. */
  logprobs: number | null;
}

export const DEFAULT_SAMPLING_PARAMS: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  logitBias: null,
  seed: null,
  logprobs: null,
});

export class SamplingParamsError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "SamplingParamsError";
  }
}

/** Fills defaults and validates ranges; throws SamplingParamsError naming the bad field. */
export function makeSamplingParams(p: Partial<SamplingParams> = {}): SamplingParams {
  const out: SamplingParams = { ...DEFAULT_SAMPLING_PARAMS, ...p };
  const check = (ok: boolean, field: string, msg: string) => {
    if (!ok) throw new SamplingParamsError(field, msg);
  };
  check(Number.isFinite(out.temperature) && out.temperature >= 0, "temperature", "must be ≥ 0");
  check(Number.isInteger(out.topK), "top_k", "must be an integer (≤ 0 disables)");
  check(out.topP > 0 && out.topP <= 1, "top_p", "must be in (0, 1]");
  check(out.minP >= 0 && out.minP <= 1, "min_p", "must be in [0, 1]");
  check(Number.isFinite(out.repetitionPenalty) && out.repetitionPenalty > 0, "repetition_penalty", "must be > 0");
  check(Number.isFinite(out.presencePenalty) && Math.abs(out.presencePenalty) <= 2, "presence_penalty", "must be in [-2, 2]");
  check(Number.isFinite(out.frequencyPenalty) && Math.abs(out.frequencyPenalty) <= 2, "frequency_penalty", "must be in [-2, 2]");
  check(out.seed === null || Number.isSafeInteger(out.seed), "seed", "must be an integer");
  check(
    out.logprobs === null || (Number.isInteger(out.logprobs) && out.logprobs >= 0 && out.logprobs <= 20),
    "top_logprobs",
    "must be in [0, 20]",
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// RNG: xoshiro128** seeded through splitmix32 — deterministic for a given seed across runs.

export class Rng {
  #s = new Uint32Array(4);

  constructor(seed: number) {
    // Mix both 32-bit halves of a (safe-integer) seed.
    let x = (seed >>> 0) ^ 0x9e3779b9;
    const hi = Math.floor(Math.abs(seed) / 4294967296) >>> 0;
    x = (x ^ Math.imul(hi, 0x85ebca6b)) >>> 0;
    if (seed < 0) x = ~x >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.#s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0) this.#s[0] = 1;
  }

  static randomSeed(): number {
    const u = crypto.getRandomValues(new Uint32Array(2));
    return (u[0] & 0x1fffff) * 4294967296 + u[1];
  }

  nextU32(): number {
    const s = this.#s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    return ((this.nextU32() >>> 5) * 67108864 + (this.nextU32() >>> 6)) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// ---------------------------------------------------------------------------------------------

export interface TopLogprob {
  token: number;
  logprob: number;
}

export interface SampleResult {
  token: number;
  /** Present when params.logprobs !== null. */
  logprob?: number;
  /** Present when params.logprobs !== null (possibly empty), sorted by logprob, descending. */
  topLogprobs?: TopLogprob[];
}

/**
 * Indices of the k largest values of x (ties → lower index first), sorted descending.
 * O(n log k) with a bounded min-heap; `limit` restricts to the first `limit` entries of x.
 */
export function topKIndices(x: Float32Array, k: number, limit = x.length): Int32Array {
  const n = Math.min(limit, x.length);
  k = Math.max(0, Math.min(k, n));
  const heap = new Int32Array(k); // min-heap by (value asc, index desc) → root is the worst kept
  let size = 0;
  const worse = (a: number, b: number) => x[a] < x[b] || (x[a] === x[b] && a > b);
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && worse(heap[l], heap[m])) m = l;
      if (r < size && worse(heap[r], heap[m])) m = r;
      if (m === i) return;
      const t = heap[i];
      heap[i] = heap[m];
      heap[m] = t;
      i = m;
    }
  };
  if (k === 0) return heap;
  for (let i = 0; i < n; i++) {
    if (size < k) {
      let j = size++;
      heap[j] = i;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (!worse(heap[j], heap[p])) break;
        const t = heap[j];
        heap[j] = heap[p];
        heap[p] = t;
        j = p;
      }
    } else if (worse(heap[0], i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  const out = Array.from(heap.subarray(0, size));
  out.sort((a, b) => x[b] - x[a] || a - b);
  return Int32Array.from(out);
}

function argmax(x: Float32Array): number {
  let best = 0;
  let bv = x[0];
  for (let i = 1; i < x.length; i++) {
    if (x[i] > bv) {
      bv = x[i];
      best = i;
    }
  }
  return best;
}

/** In-place penalties and bias (steps 1–3). */
export function applyPenalties(
  logits: Float32Array,
  params: SamplingParams,
  promptIds: ArrayLike<number>,
  outputIds: ArrayLike<number>,
): void {
  const V = logits.length;
  if (params.logitBias) {
    for (const [k, b] of Object.entries(params.logitBias)) {
      const id = Number(k);
      if (Number.isInteger(id) && id >= 0 && id < V) logits[id] += b;
    }
  }
  if (params.repetitionPenalty !== 1) {
    const seen = new Set<number>();
    const p = params.repetitionPenalty;
    const pen = (id: number) => {
      if (id < 0 || id >= V || seen.has(id)) return;
      seen.add(id);
      logits[id] = logits[id] > 0 ? logits[id] / p : logits[id] * p;
    };
    for (let i = 0; i < promptIds.length; i++) pen(promptIds[i]);
    for (let i = 0; i < outputIds.length; i++) pen(outputIds[i]);
  }
  if (params.presencePenalty !== 0 || params.frequencyPenalty !== 0) {
    const counts = new Map<number, number>();
    for (let i = 0; i < outputIds.length; i++) counts.set(outputIds[i], (counts.get(outputIds[i]) ?? 0) + 1);
    for (const [id, c] of counts) {
      if (id >= 0 && id < V) logits[id] -= c * params.frequencyPenalty + params.presencePenalty;
    }
  }
}

/** A per-request sampler: owns the seeded RNG and a scratch buffer. */
export class Sampler {
  readonly params: SamplingParams;
  readonly seed: number;
  readonly rng: Rng;
  #scratch: Float32Array | null = null;
  #scratch2: Float32Array | null = null;

  constructor(params: Partial<SamplingParams> = {}) {
    this.params = makeSamplingParams(params);
    this.seed = this.params.seed ?? Rng.randomSeed();
    this.rng = new Rng(this.seed);
  }

  /**
   * Picks the next token. `logits` is not modified. `promptIds`/`outputIds` feed the penalties.
   */
  sample(
    logits: Float32Array,
    promptIds: ArrayLike<number> = [],
    outputIds: ArrayLike<number> = [],
    mask: Int32Array | null = null,
  ): SampleResult {
    const p = this.params;
    const V = logits.length;
    if (V === 0) throw new Error("empty logits");
    if (!this.#scratch || this.#scratch.length !== V) this.#scratch = new Float32Array(V);
    const x = this.#scratch;
    x.set(logits);
    applyPenalties(x, p, promptIds, outputIds);
    const greedy = p.temperature === 0 || p.topK === 1;
    if (p.temperature !== 0 && p.temperature !== 1) {
      const inv = 1 / p.temperature;
      for (let i = 0; i < V; i++) x[i] *= inv;
    }
    let before = x; // what logprobs are computed from
    if (p.logprobs !== null && (mask || !greedy)) {
      if (!this.#scratch2 || this.#scratch2.length !== V) this.#scratch2 = new Float32Array(V);
      this.#scratch2.set(x); // the mask and #draw overwrite x
      before = this.#scratch2;
    }
    if (mask && applyMask(x, mask) === 0) throw new Error("the grammar allows no token");
    const token = greedy ? argmax(x) : this.#draw(x);
    return p.logprobs === null ? { token } : { token, ...logprobsOf(before, token, p.logprobs) };
  }

  /** Draws from x (logits after penalties and temperature); overwrites x with exp(x − max). */
  #draw(x: Float32Array): number {
    const p = this.params;
    const V = x.length;
    let m = -Infinity;
    for (let i = 0; i < V; i++) if (x[i] > m) m = x[i];
    if (m === -Infinity || Number.isNaN(m)) return argmax(x);
    const minProb = p.minP; // p_i / p_max ≥ min_p  ⇔  exp(x_i − max) ≥ min_p
    const k = p.topK > 0 && p.topK < V ? p.topK : V;
    if (k < V) {
      // top_k first: only the k candidates ever need exp().
      const cand = topKIndices(x, k);
      const e = new Float64Array(cand.length);
      let mass = 0;
      for (let i = 0; i < cand.length; i++) mass += e[i] = Math.exp(x[cand[i]] - m);
      let n = cand.length;
      if (p.topP < 1) {
        let cum = 0;
        for (let i = 0; i < cand.length; i++) {
          cum += e[i];
          if (cum >= p.topP * mass) {
            n = i + 1;
            break;
          }
        }
      }
      let total = 0;
      for (let i = 0; i < n; i++) if (e[i] >= minProb || i === 0) total += e[i];
      let u = this.rng.next() * total;
      for (let i = 0; i < n; i++) {
        if (e[i] < minProb && i > 0) continue;
        u -= e[i];
        if (u < 0) return cand[i];
      }
      return cand[0];
    }
    // From here x holds unnormalized probabilities; the largest is exactly 1.
    let z = 0;
    for (let i = 0; i < V; i++) {
      const e = Math.exp(x[i] - m);
      x[i] = e;
      z += e;
    }
    if (p.topP >= 1) {
      // Plain (or min_p-only) sampling: no candidate list needed.
      let total = z;
      if (minProb > 0) {
        total = 0;
        for (let i = 0; i < V; i++) if (x[i] >= minProb) total += x[i];
      }
      let u = this.rng.next() * total;
      let last = -1;
      for (let i = 0; i < V; i++) {
        const e = x[i];
        if (e < minProb || e === 0) continue;
        u -= e;
        last = i;
        if (u < 0) return i;
      }
      return last >= 0 ? last : argmax(x);
    }
    // Candidates sorted by probability, descending.
    const cutTopP = (c: Int32Array, mass: number): Int32Array => {
      let cum = 0;
      const target = p.topP * mass;
      for (let i = 0; i < c.length; i++) {
        cum += x[c[i]];
        if (cum >= target) return c.subarray(0, i + 1);
      }
      return c;
    };
    let cand: Int32Array;
    let n = Math.min(V, 64);
    for (;;) {
      const c = topKIndices(x, n);
      cand = cutTopP(c, z);
      if (cand.length < c.length || n >= V) break;
      n = Math.min(V, n * 8);
    }
    let total = 0;
    for (let i = 0; i < cand.length; i++) {
      const e = x[cand[i]];
      if (e >= minProb || i === 0) total += e;
    }
    let u = this.rng.next() * total;
    for (let i = 0; i < cand.length; i++) {
      const e = x[cand[i]];
      if (e < minProb && i > 0) continue;
      u -= e;
      if (u < 0) return cand[i];
    }
    return cand[0];
  }
}

/** Sets the logits of the tokens a grammar's bitmask does not allow to −∞ (ids past the mask
 * too); returns how many remain. */
export function applyMask(x: Float32Array, mask: Int32Array): number {
  let kept = 0;
  const V = x.length;
  for (let w = 0; w * 32 < V; w++) {
    const bits = w < mask.length ? mask[w] : 0;
    const end = Math.min(V, w * 32 + 32);
    if (bits === -1) {
      kept += end - w * 32;
      continue;
    }
    for (let i = w * 32; i < end; i++) {
      if ((bits >>> (i & 31)) & 1) kept++;
      else x[i] = -Infinity;
    }
  }
  return kept;
}

/** log-softmax of x at `token`, plus the n most likely tokens. */
export function logprobsOf(x: Float32Array, token: number, n: number): { logprob: number; topLogprobs: TopLogprob[] } {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > m) m = x[i];
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  const lse = m + Math.log(s);
  const top = n > 0 ? Array.from(topKIndices(x, n), (id) => ({ token: id, logprob: x[id] - lse })) : [];
  return { logprob: x[token] - lse, topLogprobs: top };
}

/** A prompt token's logprob under the raw model (no penalties, no temperature: what the model
 * gives it after the tokens before it), its rank among the vocabulary (1: the most likely; vLLM's
 * rank), and the n most likely tokens at its position. */
export interface PromptLogprob {
  token: number;
  logprob: number;
  rank: number;
  topLogprobs: TopLogprob[];
}

/** The prompt's logprobs from the logits of its positions ([≥ promptIds.length - 1 rows × V]; row
 * j predicts token j + 1): one entry per prompt token, the first null (nothing predicts it). */
export function promptLogprobsOf(rows: Float32Array, V: number, promptIds: ArrayLike<number>, n: number): (PromptLogprob | null)[] {
  const out: (PromptLogprob | null)[] = [null];
  for (let j = 0; j + 1 < promptIds.length; j++) {
    const x = rows.subarray(j * V, (j + 1) * V);
    const token = promptIds[j + 1];
    const { logprob, topLogprobs } = logprobsOf(x, token, n);
    let above = 0;
    for (let i = 0; i < V; i++) if (x[i] > x[token]) above++;
    out.push({ token, logprob, rank: above + 1, topLogprobs });
  }
  return out;
}
