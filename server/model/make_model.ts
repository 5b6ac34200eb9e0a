// make_model.ts — write a deterministic random Llama model folder (Hugging Face layout); the
// command line is scripts/make_model.ts.
//
// Every shape gets config.json, generation_config.json, model.safetensors (normal(0, 0.02) weights,
// norms = 1), and a byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json with a
// ChatML chat template; Llama-3 pre-tokenizer split pattern) trained deterministically on a small embedded corpus: 256 byte tokens, so
// any text encodes, ~250 merges, 4 special tokens. The benchmark shapes (smollm-135m,
// tinyllama-1.1b) reuse that tokenizer: their larger vocab is padding that decodes to nothing.
// Tensors are generated and written one at a time, so memory stays near one tensor.
import { type TensorToWrite, writeSafetensors } from "./safetensors.ts";
import { bytesToUnicode } from "./tokenizer.ts";

export interface ModelShape {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** null → vocab of the generated tokenizer, rounded up to a multiple of 64. */
  vocabSize: number | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  ropeTheta: number;
  rmsNormEps: number;
}

export const SHAPES: Record<string, ModelShape> = {
  tiny: {
    hiddenSize: 64,
    intermediateSize: 192,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: null,
    maxPositionEmbeddings: 512,
    tieWordEmbeddings: false,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
  },
  "smollm-135m": {
    hiddenSize: 576,
    intermediateSize: 1536,
    numLayers: 30,
    numHeads: 9,
    numKvHeads: 3,
    vocabSize: 49152,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: true,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
  },
  "tinyllama-1.1b": {
    hiddenSize: 2048,
    intermediateSize: 5632,
    numLayers: 22,
    numHeads: 32,
    numKvHeads: 4,
    vocabSize: 32000,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: false,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
  },
  // LLaMA (1)'s sizes, as in the QLoRA paper's tables (the memory planner's named shapes)
  "llama-7b": llama(4096, 11008, 32, 32),
  "llama-13b": llama(5120, 13824, 40, 40),
  "llama-33b": llama(6656, 17920, 60, 52),
  "llama-65b": llama(8192, 22016, 80, 64),
};

function llama(hiddenSize: number, intermediateSize: number, numLayers: number, numHeads: number): ModelShape {
  return {
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    vocabSize: 32000,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: false,
    ropeTheta: 10000,
    rmsNormEps: 1e-6,
  };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

const CORPUS = `Once upon a time, there was a little robot named Bolt. Bolt lived in a small town near the sea.
Every morning, Bolt would walk to the market and help the baker carry bread. The baker said, "Thank you, Bolt!"
One day, a storm came. The wind was strong and the rain was cold. The children were scared, so Bolt told them a story.
"Don't be afraid," said Bolt. "The sun will come back tomorrow." And it did. Everyone was happy again.
The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. 0123456789 + - * / = < > ( ) [ ] { }
Question: What is 12 + 30? Answer: 42. Question: What color is the sky? Answer: The sky is blue.
def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i)\n
function greet(name) { return "Hello, " + name + "!"; } const x = [1, 2, 3].map((v) => v * 2);
User: Can you summarize the story? Assistant: A kind robot helps his town and comforts children during a storm.
I'm sure it's fine; we'll see what they've done. You're right, isn't it? Yes, it is.
Once upon a time, in a big green forest, there lived a little bunny named Pip. Pip loved to hop and play with his friends.
One day, Pip found a shiny red ball under a tree. "What a pretty ball!" said Pip. He wanted to share it with his friends.
Pip and his friends played with the ball all day. They laughed and ran and had so much fun. When the sun went down, they were tired.
Once upon a time, a girl named Lily had a small dog. The dog liked to run in the park. Lily and her dog were best friends.
The user asked a question and the assistant gave a helpful answer. The assistant said: "Here is what I think."
Les enfants jouent dans le jardin. Der Hund läuft schnell. El niño come una manzana. Café, naïve, résumé.
`;

/** Llama-3's pre-tokenizer split pattern (as stored in tokenizer.json). */
const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** The same pattern for JavaScript RegExp (no inline (?i:) groups). */
const LLAMA3_PATTERN_JS = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]" + LLAMA3_PATTERN.slice(LLAMA3_PATTERN.indexOf(")|") + 1);
export const SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"];

export const CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Trains byte-level BPE merges on the embedded corpus (deterministic tie-breaking). */
export function buildByteLevelTokenizer(numMerges = 250): { tokenizerJson: unknown; specialIds: Record<string, number>; size: number } {
  const b2u = bytesToUnicode();
  const enc = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const m of CORPUS.matchAll(new RegExp(LLAMA3_PATTERN_JS, "gu"))) {
    const w = Array.from(enc.encode(m[0]), (b) => b2u[b]).join("");
    wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
  }
  const words = [...wordCounts.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([w, c]) => ({
    syms: Array.from(w),
    count: c,
  }));
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[b2u[b]] = b;
  let next = 256;
  const merges: [string, string][] = [];
  for (let step = 0; step < numMerges; step++) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const k = w.syms[i] + "\u0000" + w.syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + w.count);
      }
    }
    let best: string | null = null;
    let bestCount = 1; // only merge pairs seen at least twice
    for (const [k, c] of pairs) {
      if (c > bestCount || (c === bestCount && best !== null && k < best)) {
        best = k;
        bestCount = c;
      }
    }
    if (best === null) break;
    const [a, b] = best.split("\u0000");
    const ab = a + b;
    if (vocab[ab] !== undefined) continue;
    merges.push([a, b]);
    vocab[ab] = next++;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(ab);
          i++;
        } else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  const specialIds: Record<string, number> = {};
  const added = SPECIAL_TOKENS.map((content) => {
    specialIds[content] = next;
    return { id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  const bos = SPECIAL_TOKENS[0];
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [specialIds[bos]], tokens: [bos] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return { tokenizerJson, specialIds, size: next };
}

// ---------------------------------------------------------------------------------------------
// Weights

/**
 * numel values of normal(0, std), deterministic in (seed, stream): xoshiro128+ seeded through
 * splitmix32, Box-Muller, generated in chunks and converted straight to the output dtype.
 */
function normalBytes(numel: number, dtype: "F32" | "BF16", seed: number, stream: number, std: number): Uint8Array {
  let x = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
  const mix = () => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) | 0;
  };
  let s0 = mix() | 1, s1 = mix(), s2 = mix(), s3 = mix();
  const CH = 1 << 16;
  const buf = new Float32Array(CH);
  const bu = new Uint32Array(buf.buffer);
  const outF = dtype === "F32" ? new Float32Array(numel) : null;
  const outH = dtype === "BF16" ? new Uint16Array(numel) : null;
  for (let base = 0; base < numel; base += CH) {
    const n = Math.min(CH, numel - base);
    for (let i = 0; i < n; i += 2) {
      let r1 = (s0 + s3) >>> 0;
      let t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      const r2 = (s0 + s3) >>> 0;
      t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      r1 = (r1 + 1) / 4294967297;
      const rad = Math.sqrt(-2 * Math.log(r1)) * std;
      const ang = 1.4629180792671596e-9 * r2; // 2π / 2^32
      buf[i] = rad * Math.cos(ang);
      if (i + 1 < n) buf[i + 1] = rad * Math.sin(ang);
    }
    if (outF) outF.set(buf.subarray(0, n), base);
    else {
      for (let i = 0; i < n; i++) {
        const v = bu[i];
        outH![base + i] = (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
      }
    }
  }
  return new Uint8Array((outF ?? outH)!.buffer);
}

function constantBytes(numel: number, dtype: "F32" | "BF16", value: number): Uint8Array {
  const f = new Float32Array(numel).fill(value);
  if (dtype === "F32") return new Uint8Array(f.buffer);
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(numel);
  for (let i = 0; i < numel; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
  return new Uint8Array(out.buffer);
}

export interface MakeModelOptions {
  shape: string;
  out: string;
  seed?: number;
  dtype?: "f32" | "bf16";
  std?: number;
}

/** Writes the model folder; returns the list of files written. */
export async function makeModel(opts: MakeModelOptions): Promise<string[]> {
  const shape = SHAPES[opts.shape];
  if (!shape) throw new Error(`unknown shape "${opts.shape}" (known: ${Object.keys(SHAPES).join(", ")})`);
  const seed = opts.seed ?? 0;
  const dtype = (opts.dtype ?? (opts.shape === "tiny" ? "f32" : "bf16")) === "f32" ? "F32" : "BF16";
  const std = opts.std ?? 0.02;
  const out = opts.out;
  await Deno.mkdir(out, { recursive: true });

  const tok = buildByteLevelTokenizer();
  const vocabSize = shape.vocabSize ?? Math.ceil(tok.size / 64) * 64;
  if (vocabSize < tok.size) throw new Error(`vocab ${vocabSize} is smaller than the tokenizer (${tok.size})`);
  const bos = tok.specialIds["<|begin_of_text|>"];
  const eos = tok.specialIds["<|end_of_text|>"];
  const imEnd = tok.specialIds["<|im_end|>"];
  const H = shape.hiddenSize;
  const hd = H / shape.numHeads;
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: H,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.numLayers,
    num_attention_heads: shape.numHeads,
    num_key_value_heads: shape.numKvHeads,
    head_dim: hd,
    vocab_size: vocabSize,
    max_position_embeddings: shape.maxPositionEmbeddings,
    rms_norm_eps: shape.rmsNormEps,
    rope_theta: shape.ropeTheta,
    rope_scaling: null,
    hidden_act: "silu",
    tie_word_embeddings: shape.tieWordEmbeddings,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: bos,
    eos_token_id: [eos, imEnd],
    torch_dtype: dtype === "F32" ? "float32" : "bfloat16",
    initializer_range: std,
    use_cache: true,
  };
  const files: string[] = [];
  const writeJson = async (name: string, v: unknown) => {
    await Deno.writeTextFile(`${out}/${name}`, JSON.stringify(v, null, 2) + "\n");
    files.push(name);
  };
  await writeJson("config.json", config);
  await writeJson("generation_config.json", { bos_token_id: bos, eos_token_id: [eos, imEnd], max_length: shape.maxPositionEmbeddings });
  await writeJson("tokenizer.json", tok.tokenizerJson);
  await writeJson("tokenizer_config.json", {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: "<|begin_of_text|>",
    eos_token: "<|end_of_text|>",
    pad_token: null,
    unk_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: shape.maxPositionEmbeddings,
    tokenizer_class: "PreTrainedTokenizerFast",
    chat_template: CHAT_TEMPLATE,
  });

  const I = shape.intermediateSize;
  const qDim = shape.numHeads * hd;
  const kvDim = shape.numKvHeads * hd;
  const tensors: TensorToWrite[] = [];
  let stream = 0;
  const random = (name: string, dims: number[]) => {
    const s = stream++;
    tensors.push({
      name,
      dtype,
      shape: dims,
      data: () => normalBytes(dims.reduce((a, b) => a * b, 1), dtype, seed, s, std),
    });
  };
  const ones = (name: string, n: number) => {
    stream++;
    tensors.push({ name, dtype, shape: [n], data: () => constantBytes(n, dtype, 1) });
  };
  random("model.embed_tokens.weight", [vocabSize, H]);
  for (let l = 0; l < shape.numLayers; l++) {
    const p = `model.layers.${l}`;
    ones(`${p}.input_layernorm.weight`, H);
    random(`${p}.self_attn.q_proj.weight`, [qDim, H]);
    random(`${p}.self_attn.k_proj.weight`, [kvDim, H]);
    random(`${p}.self_attn.v_proj.weight`, [kvDim, H]);
    random(`${p}.self_attn.o_proj.weight`, [H, qDim]);
    ones(`${p}.post_attention_layernorm.weight`, H);
    random(`${p}.mlp.gate_proj.weight`, [I, H]);
    random(`${p}.mlp.up_proj.weight`, [I, H]);
    random(`${p}.mlp.down_proj.weight`, [H, I]);
  }
  ones("model.norm.weight", H);
  if (!shape.tieWordEmbeddings) random("lm_head.weight", [vocabSize, H]);
  await writeSafetensors(`${out}/model.safetensors`, tensors, {
    format: "pt",
    generator: `make_model.ts shape=${opts.shape} seed=${seed}`,
  });
  files.push("model.safetensors");
  return files;
}
