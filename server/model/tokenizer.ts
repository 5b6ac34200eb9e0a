// tokenizer.ts — load a Hugging Face tokenizer.json (+ tokenizer_config.json) and encode/decode.
//
// Encoding is delegated to @huggingface/tokenizers (a pure-JS port of the Rust tokenizers
// pipeline: normalizers, pre-tokenizers, BPE with byte fallback, byte-level BPE, added tokens,
// TemplateProcessing). Decoding is done here, byte-exactly, from each token's bytes, so that the
// incremental detokenizer (engine/detokenize.ts) and decode() agree by construction:
//
//   decode(ids) = utf8_lossy(concat(tokenBytes(id) for kept ids)) with one leading space removed
//                 when the decoder strips it (SentencePiece "Strip"/"Metaspace" decoders).
//
// Supported decoders: SentencePiece style (Replace "▁"→" " / Metaspace, ByteFallback, Fuse,
// Strip) and byte-level (ByteLevel). clean_up_tokenization_spaces is NOT applied (streaming
// could not reproduce it).
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";

export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenizerError";
  }
}

export interface EncodeOptions {
  /** Apply the post-processor (e.g. prepend BOS). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special (added, special: true) tokens. Default true. */
  skipSpecialTokens?: boolean;
}

export interface TokenizerFiles {
  tokenizerJson: unknown;
  tokenizerConfig?: Record<string, unknown> | null;
  /** Contents of chat_template.jinja, if present (overrides tokenizer_config's). */
  chatTemplateFile?: string | null;
}

/** GPT-2 bytes_to_unicode: byte → printable char used by byte-level BPE vocabularies. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out: string[] = new Array(256);
  for (let i = 0; i < bs.length; i++) out[bs[i]] = String.fromCodePoint(cs[i]);
  return out;
}

function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return null;
}

interface DecoderFlags {
  byteLevel: boolean;
  byteFallback: boolean;
  metaspace: boolean;
  stripLeadingSpaces: number;
}

function decoderFlags(dec: unknown): DecoderFlags {
  const flags: DecoderFlags = { byteLevel: false, byteFallback: false, metaspace: false, stripLeadingSpaces: 0 };
  const visit = (d: unknown) => {
    if (!d || typeof d !== "object") return;
    const o = d as Record<string, unknown>;
    switch (o.type) {
      case "Sequence":
        for (const x of (o.decoders as unknown[]) ?? []) visit(x);
        break;
      case "ByteLevel":
        flags.byteLevel = true;
        break;
      case "ByteFallback":
        flags.byteFallback = true;
        break;
      case "Fuse":
        break;
      case "Replace": {
        const pat = (o.pattern as { String?: string })?.String;
        if (pat === "▁" && o.content === " ") flags.metaspace = true;
        else throw new TokenizerError(`unsupported Replace decoder ${JSON.stringify(o)}`);
        break;
      }
      case "Strip":
        if (o.content !== " " || o.stop) throw new TokenizerError(`unsupported Strip decoder ${JSON.stringify(o)}`);
        flags.stripLeadingSpaces = Number(o.start ?? 0);
        break;
      case "Metaspace": {
        flags.metaspace = true;
        const scheme = o.prepend_scheme ?? (o.add_prefix_space === false ? "never" : "always");
        if (scheme !== "never") flags.stripLeadingSpaces = 1;
        break;
      }
      default:
        throw new TokenizerError(`unsupported decoder type ${JSON.stringify(o.type)}`);
    }
  };
  if (dec !== null && dec !== undefined) visit(dec);
  return flags;
}

const EMPTY = new Uint8Array(0);
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

export class Tokenizer {
  readonly #hf: HFTokenizer;
  /** id → raw bytes of the piece (before leading-space stripping). */
  readonly #pieceBytes: Uint8Array[];
  readonly #pieces: string[];
  readonly #special: Uint8Array;
  readonly #vocab: Map<string, number>;
  #llamaSpecials: { bos: number | null; eos: number | null } | null = null;
  readonly stripLeadingSpaces: number;
  /** How the vocabulary's strings encode bytes (grammar engines decode them the same way):
   * GPT-2 byte-level ("Ġthe"), SentencePiece ("▁the", "<0x0A>"), or the text itself. */
  readonly pieceEncoding: "byte_level" | "byte_fallback" | "raw";
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  /** Whether encode(..., {addSpecialTokens: true}) prepends BOS (observed, not declared). */
  readonly addsBos: boolean;
  readonly chatTemplate: string | null;
  /** Named chat templates (tokenizer_config's list form), "default" included when present. */
  readonly chatTemplates: Record<string, string>;
  readonly config: Record<string, unknown>;
  readonly specialIds: ReadonlySet<number>;

  constructor(files: TokenizerFiles) {
    const tj = files.tokenizerJson as Record<string, unknown>;
    if (!tj || typeof tj !== "object" || !tj.model) throw new TokenizerError("tokenizer.json has no model");
    const model = tj.model as Record<string, unknown>;
    if (model.type !== "BPE") throw new TokenizerError(`unsupported tokenizer model type ${JSON.stringify(model.type)} (only BPE)`);
    const cfg = (files.tokenizerConfig ?? {}) as Record<string, unknown>;
    this.config = cfg;
    try {
      this.#hf = new HFTokenizer(tj, cfg);
    } catch (e) {
      throw new TokenizerError(`cannot build tokenizer: ${(e as Error).message}`);
    }
    const flags = decoderFlags(tj.decoder);
    this.stripLeadingSpaces = flags.stripLeadingSpaces;
    this.pieceEncoding = flags.byteLevel ? "byte_level" : flags.byteFallback || flags.metaspace ? "byte_fallback" : "raw";

    const vocab = new Map<string, number>();
    for (const [tok, id] of Object.entries(model.vocab as Record<string, number>)) vocab.set(tok, id);
    const added = (tj.added_tokens as Array<{ id: number; content: string; special?: boolean }>) ?? [];
    for (const a of added) vocab.set(a.content, a.id);
    this.#vocab = vocab;
    let maxId = -1;
    for (const id of vocab.values()) {
      if (!Number.isSafeInteger(id) || id < 0 || id > 16_000_000) throw new TokenizerError(`tokenizer.json has an invalid token id ${id}`);
      if (id > maxId) maxId = id;
    }
    this.vocabSize = maxId + 1;
    const pieces: string[] = new Array(this.vocabSize).fill("");
    for (const [tok, id] of vocab) pieces[id] = tok;
    this.#pieces = pieces;
    const special = new Uint8Array(this.vocabSize);
    const addedIds = new Set<number>();
    const specialIds = new Set<number>();
    for (const a of added) {
      addedIds.add(a.id);
      if (a.special) {
        special[a.id] = 1;
        specialIds.add(a.id);
      }
    }
    this.#special = special;
    this.specialIds = specialIds;

    const enc = new TextEncoder();
    const byteMap = new Map<string, number>();
    if (flags.byteLevel) bytesToUnicode().forEach((ch, b) => byteMap.set(ch, b));
    this.#pieceBytes = pieces.map((p, id) => {
      if (addedIds.has(id)) return enc.encode(p);
      if (flags.byteFallback) {
        const m = BYTE_TOKEN.exec(p);
        if (m) return new Uint8Array([parseInt(m[1], 16)]);
      }
      if (flags.byteLevel) {
        const out: number[] = [];
        for (const ch of p) {
          const b = byteMap.get(ch);
          if (b !== undefined) out.push(b);
          else out.push(...enc.encode(ch));
        }
        return new Uint8Array(out);
      }
      return enc.encode(flags.metaspace ? p.replaceAll("▁", " ") : p);
    });

    const pick = (key: string): string | null => tokenString(cfg[key]);
    const firstSpecial = (re: RegExp) => added.find((a) => a.special && re.test(a.content))?.content ?? null;
    this.bosToken = pick("bos_token") ?? firstSpecial(/^(<s>|<\|begin_of_text\|>)$/);
    this.eosToken = pick("eos_token") ?? firstSpecial(/^(<\/s>|<\|end_of_text\|>|<\|endoftext\|>)$/);
    this.padToken = pick("pad_token");
    this.unkToken = pick("unk_token") ?? (typeof model.unk_token === "string" ? model.unk_token : null);
    this.bosTokenId = this.bosToken !== null ? vocab.get(this.bosToken) ?? null : null;
    this.eosTokenId = this.eosToken !== null ? vocab.get(this.eosToken) ?? null : null;
    this.padTokenId = this.padToken !== null ? vocab.get(this.padToken) ?? null : null;

    // transformers' LlamaTokenizerFast (and Gemma/CodeLlama) rebuild the post-processor from
    // add_bos_token / add_eos_token; other classes use tokenizer.json's post-processor as is.
    const cls = String(cfg.tokenizer_class ?? "").replace(/Fast$/, "");
    if (
      ["LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer"].includes(cls) &&
      (typeof cfg.add_bos_token === "boolean" || typeof cfg.add_eos_token === "boolean")
    ) {
      this.#llamaSpecials = {
        bos: cfg.add_bos_token !== false && this.bosTokenId !== null ? this.bosTokenId : null,
        eos: cfg.add_eos_token === true && this.eosTokenId !== null ? this.eosTokenId : null,
      };
    }
    const withSpecials = this.encode("a");
    this.addsBos = this.bosTokenId !== null && withSpecials[0] === this.bosTokenId;

    const templates: Record<string, string> = {};
    const ct = cfg.chat_template;
    if (typeof ct === "string") templates.default = ct;
    else if (Array.isArray(ct)) {
      for (const t of ct as Array<{ name?: unknown; template?: unknown }>) {
        if (typeof t?.name === "string" && typeof t.template === "string") templates[t.name] = t.template;
      }
    }
    if (files.chatTemplateFile) templates.default = files.chatTemplateFile;
    this.chatTemplates = templates;
    this.chatTemplate = templates.default ?? null;
  }

  /** Loads DIR/tokenizer.json, DIR/tokenizer_config.json (optional), DIR/chat_template.jinja (optional). */
  static async load(dir: string): Promise<Tokenizer> {
    const readJson = async (name: string, required: boolean): Promise<unknown> => {
      try {
        return JSON.parse(await Deno.readTextFile(`${dir}/${name}`));
      } catch (e) {
        if (!required && e instanceof Deno.errors.NotFound) return null;
        throw new TokenizerError(`cannot read ${dir}/${name}: ${(e as Error).message}`);
      }
    };
    const tokenizerJson = await readJson("tokenizer.json", true);
    const tokenizerConfig = (await readJson("tokenizer_config.json", false)) as Record<string, unknown> | null;
    let chatTemplateFile: string | null = null;
    try {
      chatTemplateFile = await Deno.readTextFile(`${dir}/chat_template.jinja`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return new Tokenizer({ tokenizerJson, tokenizerConfig, chatTemplateFile });
  }

  /**
   * Text → ids. With addSpecialTokens (default) the post-processor runs (e.g. BOS prepended).
   * Chat prompts rendered by a template already contain BOS text: encode those with
   * addSpecialTokens: false, as transformers' apply_chat_template does.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const special = opts.addSpecialTokens ?? true;
    if (special && this.#llamaSpecials) {
      const ids = this.#hf.encode(text, { add_special_tokens: false }).ids;
      if (this.#llamaSpecials.bos !== null) ids.unshift(this.#llamaSpecials.bos);
      if (this.#llamaSpecials.eos !== null) ids.push(this.#llamaSpecials.eos);
      return ids;
    }
    return this.#hf.encode(text, { add_special_tokens: special }).ids;
  }

  /** Decodes ids to text (see the file comment for the exact rule). */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecialTokens ?? true;
    const parts: Uint8Array[] = [];
    let total = 0;
    let strip = this.stripLeadingSpaces;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (skip && this.isSpecial(id)) continue;
      let b = this.tokenBytes(id);
      if (strip > 0 && b.length > 0) {
        if (b[0] === 0x20) b = b.subarray(1);
        strip = 0;
      }
      parts.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return new TextDecoder().decode(all);
  }

  /** Raw UTF-8 bytes a token contributes (a byte-fallback token gives one byte). */
  tokenBytes(id: number): Uint8Array {
    const b = this.#pieceBytes[id];
    if (b !== undefined) return b;
    // Models often pad their embedding past the tokenizer (config vocab_size > tokenizer size):
    // such ids decode to nothing, as in Hugging Face tokenizers.
    if (Number.isSafeInteger(id) && id >= 0) return EMPTY;
    throw new TokenizerError(`invalid token id ${id}`);
  }

  isSpecial(id: number): boolean {
    return this.#special[id] === 1;
  }

  /** The vocabulary string of a token (e.g. "▁Once", "<0xE2>", "Ġthe"). */
  idToToken(id: number): string | undefined {
    return this.#pieces[id];
  }

  tokenToId(token: string): number | undefined {
    return this.#vocab.get(token);
  }
}
