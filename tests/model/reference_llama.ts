// reference_llama.ts — a plain float64 Llama forward (whole sequence, causal), the reference
// the native forward is tested against. Written for clarity, not speed.
import type { ModelConfig } from "../../server/model/config.ts";
import { ropeInvFreq } from "../../server/model/config.ts";
import { SafetensorsModel } from "../../server/model/safetensors.ts";

type Mat = { data: Float64Array; rows: number; cols: number };

export interface ReferenceWeights {
  embed: Mat;
  layers: {
    inNorm: Float64Array;
    postNorm: Float64Array;
    q: Mat;
    k: Mat;
    v: Mat;
    o: Mat;
    gate: Mat;
    up: Mat;
    down: Mat;
    qb?: Float64Array;
    kb?: Float64Array;
    vb?: Float64Array;
  }[];
  norm: Float64Array;
  lmHead: Mat;
}

export async function loadReferenceWeights(dir: string, c: ModelConfig): Promise<ReferenceWeights> {
  const st = await SafetensorsModel.open(dir);
  try {
    const vec = async (n: string) => Float64Array.from(await st.readF32(n));
    const mat = async (n: string): Promise<Mat> => {
      const info = st.info(n);
      return { data: await vec(n), rows: info.shape[0], cols: info.shape[1] };
    };
    const layers = [];
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}`;
      layers.push({
        inNorm: await vec(`${p}.input_layernorm.weight`),
        postNorm: await vec(`${p}.post_attention_layernorm.weight`),
        q: await mat(`${p}.self_attn.q_proj.weight`),
        k: await mat(`${p}.self_attn.k_proj.weight`),
        v: await mat(`${p}.self_attn.v_proj.weight`),
        o: await mat(`${p}.self_attn.o_proj.weight`),
        gate: await mat(`${p}.mlp.gate_proj.weight`),
        up: await mat(`${p}.mlp.up_proj.weight`),
        down: await mat(`${p}.mlp.down_proj.weight`),
        qb: st.has(`${p}.self_attn.q_proj.bias`) ? await vec(`${p}.self_attn.q_proj.bias`) : undefined,
        kb: st.has(`${p}.self_attn.k_proj.bias`) ? await vec(`${p}.self_attn.k_proj.bias`) : undefined,
        vb: st.has(`${p}.self_attn.v_proj.bias`) ? await vec(`${p}.self_attn.v_proj.bias`) : undefined,
      });
    }
    const embed = await mat("model.embed_tokens.weight");
    const lmHead = st.has("lm_head.weight") ? await mat("lm_head.weight") : embed;
    return { embed, layers, norm: await vec("model.norm.weight"), lmHead };
  } finally {
    st.close();
  }
}

function linear(x: Float64Array, T: number, w: Mat, bias?: Float64Array): Float64Array {
  const out = new Float64Array(T * w.rows);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < w.rows; o++) {
      let s = bias ? bias[o] : 0;
      const xo = t * w.cols, wo = o * w.cols;
      for (let i = 0; i < w.cols; i++) s += x[xo + i] * w.data[wo + i];
      out[t * w.rows + o] = s;
    }
  }
  return out;
}

function rmsnorm(x: Float64Array, T: number, C: number, w: Float64Array, eps: number): Float64Array {
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < C; i++) ss += x[t * C + i] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    for (let i = 0; i < C; i++) out[t * C + i] = x[t * C + i] * r * w[i];
  }
  return out;
}

function rope(x: Float64Array, T: number, H: number, D: number, positions: number[], invFreq: Float32Array): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const a = positions[t] * invFreq[i];
        const c = Math.cos(a), s = Math.sin(a);
        const x1 = x[o + i], x2 = x[o + i + half];
        x[o + i] = x1 * c - x2 * s;
        x[o + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

/** Logits [T, V] for tokens at positions 0..T-1. */
export function referenceForward(w: ReferenceWeights, c: ModelConfig, tokens: number[]): Float64Array {
  const T = tokens.length, C = c.hiddenSize, H = c.numHeads, Hkv = c.numKvHeads, D = c.headDim;
  const invFreq = ropeInvFreq(c);
  const positions = tokens.map((_, i) => i);
  const x = new Float64Array(T * C);
  for (let t = 0; t < T; t++) x.set(w.embed.data.subarray(tokens[t] * C, tokens[t] * C + C), t * C);
  for (const L of w.layers) {
    const h = rmsnorm(x, T, C, L.inNorm, c.rmsNormEps);
    const q = linear(h, T, L.q, L.qb), k = linear(h, T, L.k, L.kb), v = linear(h, T, L.v, L.vb);
    rope(q, T, H, D, positions, invFreq);
    rope(k, T, Hkv, D, positions, invFreq);
    const attn = new Float64Array(T * H * D);
    const group = H / Hkv;
    for (let t = 0; t < T; t++) {
      for (let hh = 0; hh < H; hh++) {
        const kvh = Math.floor(hh / group);
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += q[(t * H + hh) * D + d] * k[(j * Hkv + kvh) * D + d];
          scores[j] = s / Math.sqrt(D);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += scores[j] = Math.exp(scores[j] - max);
        for (let j = 0; j <= t; j++) {
          const p = scores[j] / sum;
          for (let d = 0; d < D; d++) attn[(t * H + hh) * D + d] += p * v[(j * Hkv + kvh) * D + d];
        }
      }
    }
    const o = linear(attn, T, L.o);
    for (let i = 0; i < x.length; i++) x[i] += o[i];
    const h2 = rmsnorm(x, T, C, L.postNorm, c.rmsNormEps);
    const g = linear(h2, T, L.gate), u = linear(h2, T, L.up);
    for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    const d = linear(g, T, L.down);
    for (let i = 0; i < x.length; i++) x[i] += d[i];
  }
  return linear(rmsnorm(x, T, C, w.norm, c.rmsNormEps), T, w.lmHead);
}
