// reference.ts — float64 reference implementations of the transformer ops, for the native op
// tests: straightforward loops, no tiling, no online softmax. Shapes follow qlora.h (row-major).

export type F64 = Float64Array;

/** out [T, C] = table rows of ids. */
export function embeddingForward(ids: ArrayLike<number>, table: F64, C: number): F64 {
  const T = ids.length;
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) out[t * C + c] = table[ids[t] * C + c];
  return out;
}

/** dtable [V, C] += scatter of dout [T, C]. */
export function embeddingBackward(dtable: F64, dout: F64, ids: ArrayLike<number>, C: number): F64 {
  const out = dtable.slice();
  for (let t = 0; t < ids.length; t++) for (let c = 0; c < C; c++) out[ids[t] * C + c] += dout[t * C + c];
  return out;
}

/** RMSNorm: out = x / sqrt(mean x² + eps) * w; rstd [T]. */
export function rmsnormForward(x: F64, w: F64, T: number, C: number, eps: number): { out: F64; rstd: F64 } {
  const out = new Float64Array(T * C), rstd = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[t * C + c] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[t] = r;
    for (let c = 0; c < C; c++) out[t * C + c] = x[t * C + c] * r * w[c];
  }
  return { out, rstd };
}

/** Rotary embedding, rotate_half layout; angle = fround(pos · inv_freq[i]) as the f32 product. */
export function ropeForward(x: F64, positions: ArrayLike<number>, invFreq: Float32Array, T: number, Hn: number, D: number, sign = 1): F64 {
  const half = D / 2, out = new Float64Array(x.length);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(Math.fround(positions[t]) * invFreq[i]);
      const c = Math.cos(a), s = sign * Math.sin(a);
      for (let h = 0; h < Hn; h++) {
        const o = (t * Hn + h) * D;
        const lo = x[o + i], hi = x[o + i + half];
        out[o + i] = lo * c - hi * s;
        out[o + i + half] = hi * c + lo * s;
      }
    }
  }
  return out;
}

/** Causal attention of one sequence: q [qLen, H, D] are the last qLen of L = kLen positions. */
export function attendSequence(
  q: F64,
  k: F64,
  v: F64,
  qLen: number,
  kLen: number,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
): { out: F64; lse: F64 } {
  const G = H / Hkv, past = kLen - qLen;
  const out = new Float64Array(qLen * H * D), lse = new Float64Array(qLen * H);
  const s = new Float64Array(kLen);
  for (let i = 0; i < qLen; i++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G), n = past + i + 1;
      let m = -Infinity;
      for (let j = 0; j < n; j++) {
        let d = 0;
        for (let e = 0; e < D; e++) d += q[(i * H + h) * D + e] * k[(j * Hkv + g) * D + e];
        s[j] = d * scale;
        m = Math.max(m, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) sum += Math.exp(s[j] - m);
      lse[i * H + h] = m + Math.log(sum);
      for (let j = 0; j < n; j++) {
        const p = Math.exp(s[j] - m) / sum;
        for (let e = 0; e < D; e++) out[(i * H + h) * D + e] += p * v[(j * Hkv + g) * D + e];
      }
    }
  }
  return { out, lse };
}

/** Packed varlen training attention: sequences [cu[s], cu[s+1]) of q [T, H, D], k, v [T, Hkv, D]. */
export function attentionForward(
  q: F64,
  k: F64,
  v: F64,
  cu: ArrayLike<number>,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
): { out: F64; lse: F64 } {
  const T = cu[cu.length - 1];
  const out = new Float64Array(T * H * D), lse = new Float64Array(T * H);
  for (let s = 0; s + 1 < cu.length; s++) {
    const a = cu[s], L = cu[s + 1] - a;
    if (L === 0) continue;
    const r = attendSequence(
      q.subarray(a * H * D, (a + L) * H * D),
      k.subarray(a * Hkv * D, (a + L) * Hkv * D),
      v.subarray(a * Hkv * D, (a + L) * Hkv * D),
      L,
      L,
      H,
      Hkv,
      D,
      scale,
    );
    out.set(r.out, a * H * D);
    lse.set(r.lse, a * H);
  }
  return { out, lse };
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

export function siluMulForward(gate: F64, up: F64): F64 {
  return gate.map((g, i) => silu(g) * up[i]);
}

/** Cross-entropy per row: losses and dlogits (grad_scale · w · (softmax − onehot)). */
export function crossEntropy(
  logits: F64,
  targets: ArrayLike<number>,
  weights: ArrayLike<number> | null,
  gradScale: number,
  T: number,
  V: number,
): { losses: F64; dlogits: F64 } {
  const losses = new Float64Array(T), dlogits = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    const tgt = targets[t];
    if (tgt < 0) continue;
    const w = weights ? weights[t] : 1;
    let m = -Infinity;
    for (let i = 0; i < V; i++) m = Math.max(m, logits[t * V + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[t * V + i] - m);
    const lse = m + Math.log(sum);
    losses[t] = w * (lse - logits[t * V + tgt]);
    for (let i = 0; i < V; i++) dlogits[t * V + i] = gradScale * w * (Math.exp(logits[t * V + i] - lse) - (i === tgt ? 1 : 0));
  }
  return { losses, dlogits };
}

/** Top-k of each row: descending, ties by lower id. */
export function topk(logits: ArrayLike<number>, B: number, V: number, k: number): { ids: number[]; vals: number[] } {
  const ids: number[] = [], vals: number[] = [];
  for (let b = 0; b < B; b++) {
    const idx = Array.from({ length: V }, (_, i) => i);
    idx.sort((x, y) => logits[b * V + y] - logits[b * V + x] || x - y);
    for (let j = 0; j < k; j++) {
      ids.push(idx[j]);
      vals.push(logits[b * V + idx[j]]);
    }
  }
  return { ids, vals };
}

/**
 * Gradient of loss(x) = Σ dout ⊙ f(x) with respect to x by central differences in float64.
 * f is called with a modified copy of x.
 */
export function numericalGradient(f: (x: F64) => F64, x: F64, dout: F64, h = 1e-5): F64 {
  const g = new Float64Array(x.length);
  const xx = x.slice();
  const loss = (y: F64) => {
    let s = 0;
    for (let i = 0; i < y.length; i++) s += dout[i] * y[i];
    return s;
  };
  for (let i = 0; i < x.length; i++) {
    const x0 = xx[i];
    xx[i] = x0 + h;
    const lp = loss(f(xx));
    xx[i] = x0 - h;
    const lm = loss(f(xx));
    xx[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

// ---------------------------------------------------------------- bf16 helpers

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 → bf16 bits, round to nearest even (NaN kept quiet). */
export function toBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function fromBf16Bits(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** x rounded to bf16 precision. */
export function roundBf16(x: number): number {
  return fromBf16Bits(toBf16Bits(x));
}

/** Analytic float64 backward of attentionForward: dq [T, H, D], dk, dv [T, Hkv, D]. */
export function attentionBackward(
  dout: F64,
  q: F64,
  k: F64,
  v: F64,
  cu: ArrayLike<number>,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
): { dq: F64; dk: F64; dv: F64 } {
  const T = cu[cu.length - 1], G = H / Hkv;
  const dq = new Float64Array(T * H * D), dk = new Float64Array(T * Hkv * D), dv = new Float64Array(T * Hkv * D);
  const { lse } = attentionForward(q, k, v, cu, H, Hkv, D, scale);
  for (let s = 0; s + 1 < cu.length; s++) {
    const a = cu[s], L = cu[s + 1] - a;
    for (let i = 0; i < L; i++) {
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / G), qi = ((a + i) * H + h) * D;
        const p = new Float64Array(i + 1), dp = new Float64Array(i + 1);
        let di = 0;
        for (let j = 0; j <= i; j++) {
          const kj = ((a + j) * Hkv + g) * D;
          let sc = 0, d2 = 0;
          for (let e = 0; e < D; e++) {
            sc += q[qi + e] * k[kj + e];
            d2 += dout[qi + e] * v[kj + e];
          }
          p[j] = Math.exp(sc * scale - lse[(a + i) * H + h]);
          dp[j] = d2;
          di += p[j] * d2;
        }
        for (let j = 0; j <= i; j++) {
          const kj = ((a + j) * Hkv + g) * D;
          const ds = p[j] * (dp[j] - di) * scale;
          for (let e = 0; e < D; e++) {
            dv[kj + e] += p[j] * dout[qi + e];
            dq[qi + e] += ds * k[kj + e];
            dk[kj + e] += ds * q[qi + e];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
