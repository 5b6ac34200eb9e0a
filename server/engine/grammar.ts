// grammar.ts — grammar-constrained decoding: a request's grammar (a JSON schema, any JSON object, a
// regex, a choice of strings, an EBNF grammar, or a structural tag for tool calls) is compiled
// against the model's vocabulary, and a matcher per sequence gives the bitmask of tokens allowed
// next; the sampler drops the others (sampling.ts, where logit_bias applies) and the matcher
// advances on each accepted token. Stop tokens are allowed only where the grammar may end.
//
// The engine: xgrammar (what vLLM, SGLang and MLC use), as the npm package @mlc-ai/web-xgrammar
// 0.1.27 (its C++ compiled to WASM, so no native build). Evaluated in Deno 2 on 2026-11-25:
//   - it works, with one shim: the package says "type": "module" but ships a UMD bundle whose
//     Emscripten loader calls `require("url")` and reads `__filename`, which an ES module in Deno
//     does not have ("ReferenceError: require is not defined"). `loadXgrammar` below defines both
//     (node:module's createRequire) while the bundle loads and initializes, then removes them; the
//     bundle publishes its API on globalThis.xgrammar (the UMD global branch).
//   - measured on this (busy, 2-core) machine with the tiny test model's 512-token vocabulary:
//     TokenizerInfo 48 ms (once per model), compiling a 20-property schema 55 ms (0.3 ms cached),
//     the next-token bitmask 0.03–0.05 ms per token.
//   - its failures are C++ CHECKs that Emscripten turns into "RuntimeError: Aborted()" (the module
//     stays usable afterwards); it prints the reason to stderr. So what a client sends is checked
//     before it reaches xgrammar where we can (JSON schemas: api/structured.ts), and an abort while
//     compiling is still a 400 (GrammarError) naming the request field.
//   - it silently ignores JSON-schema keywords it does not implement (not, if/then/else,
//     uniqueItems, multipleOf, patternProperties, …), so the API refuses those by name.
//   - the property test on random weights found two of its bugs, worked around here:
//     length-bounded strings let control characters in (lengthsAsPatterns) and its UTF-8 check
//     is lenient (grammarVocab drops tokens with bytes UTF-8 never has; bounded strings are ASCII).
//   - on the SmolLM-135M shape (vocabulary 49152, same busy machine): TokenizerInfo 0.8–1.1 s,
//     a 20-property schema 170 ms, the mask 0.75–1.9 ms per token (scripts/bench/serve.ts).
// llguidance (the second candidate) is not on the npm registry under that name (404), so it was
// not needed nor tried further.
import { createRequire } from "node:module";
import type * as XG from "@mlc-ai/web-xgrammar";

type Xgrammar = typeof XG;

/** What a request constrains its output to. */
export type GrammarSpec =
  | { type: "json_schema"; schema: Record<string, unknown> | boolean }
  | { type: "json_object" }
  | { type: "regex"; pattern: string }
  | { type: "choice"; choices: string[] }
  | { type: "grammar"; grammar: string }
  /** xgrammar's structural tag (tool calls: a fixed text around JSON). */
  | { type: "structural_tag"; format: Record<string, unknown> };

/** A grammar that does not compile: the caller's mistake (`param` names the request field). */
export class GrammarError extends Error {
  override name = "GrammarError";
  constructor(message: string, readonly param: string | null) {
    super(message);
  }
}

/** The vocabulary as xgrammar wants it: the token strings by id and how they encode bytes. */
export interface GrammarVocab {
  /** Token strings by id as in tokenizer.json ("Ġthe", "▁the", "<0x0A>"); "" for padding ids. */
  tokens: string[];
  vocabType: "byte_level" | "byte_fallback" | "raw";
  /** The model's vocabulary (logits) size, ≥ tokens.length. */
  vocabSize: number;
  /** Ids that end generation (allowed only where the grammar may end). */
  stopTokenIds: number[];
}

/** The vocabulary of a tokenizer (server/model/tokenizer.ts's Tokenizer fits). Special tokens get
 * "" (xgrammar never allows a token that decodes to nothing): the detokenizer drops their text, so
 * letting one inside a JSON string would change what the grammar saw. */
export function grammarVocab(
  tok: {
    vocabSize: number;
    pieceEncoding: GrammarVocab["vocabType"];
    idToToken(id: number): string | undefined;
    isSpecial(id: number): boolean;
    tokenBytes(id: number): Uint8Array;
  },
  vocabSize: number,
  stopTokenIds: number[],
): GrammarVocab {
  const tokens: string[] = [];
  for (let i = 0; i < Math.min(vocabSize, tok.vocabSize); i++) {
    tokens.push(tok.isSpecial(i) || tok.tokenBytes(i).some(neverUtf8) ? "" : tok.idToToken(i) ?? "");
  }
  return { tokens, vocabType: tok.pieceEncoding, vocabSize, stopTokenIds };
}

/** Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5–0xFF). xgrammar 0.1.27 takes 0xF5–0xF7 as
 * the lead of a 4-byte character, so a byte-level model could write a "character" that the
 * detokenizer turns into U+FFFD replacements (seen on random weights: a maxLength string one
 * character longer than allowed); tokens holding one are never allowed under a grammar. */
const neverUtf8 = (b: number) => b === 0xc0 || b === 0xc1 || b >= 0xf5;

let loading: Promise<Xgrammar> | null = null;

/** Loads the xgrammar bundle once (see the file comment for the shim). */
export function loadXgrammar(): Promise<Xgrammar> {
  loading ??= (async () => {
    const g = globalThis as Record<string, unknown>;
    const had = { require: "require" in g, filename: "__filename" in g };
    if (!had.require) g.require = createRequire(import.meta.url);
    if (!had.filename) g.__filename = new URL(import.meta.url).pathname;
    try {
      await import("@mlc-ai/web-xgrammar");
      const xg = g.xgrammar as Xgrammar | undefined;
      if (!xg?.GrammarCompiler) throw new Error("@mlc-ai/web-xgrammar did not load (no globalThis.xgrammar)");
      // the WASM module starts on first use, and needs the shim then too
      (await xg.Grammar.builtinJSONGrammar()).dispose();
      return xg;
    } finally {
      if (!had.require) delete g.require;
      if (!had.filename) delete g.__filename;
    }
  })();
  return loading;
}

/** How xgrammar's JSON is laid out: one line, with ", " and ": " (as json.dumps writes it; what
 * models are used to). Free whitespace would let a model pad forever with spaces. */
const SEPARATORS: [string, string] = [", ", ": "];

/** The compiled grammars of one model: the compiler, and an LRU of compiled grammars by spec. */
export class GrammarCompiler {
  #cache = new Map<string, Promise<XG.CompiledGrammar>>();
  /** Compilations and cache hits (metrics, tests). */
  compiles = 0;
  hits = 0;
  /** Milliseconds of the last compilation (benchmarks). */
  lastCompileMs = 0;

  private constructor(
    readonly xg: Xgrammar,
    readonly info: XG.TokenizerInfo,
    readonly compiler: XG.GrammarCompiler,
    readonly vocab: GrammarVocab,
    readonly capacity: number,
  ) {}

  static async create(vocab: GrammarVocab, capacity = 64): Promise<GrammarCompiler> {
    const xg = await loadXgrammar();
    const tokens = vocab.tokens.slice(0, vocab.vocabSize);
    const info = await xg.TokenizerInfo.createTokenizerInfo(tokens, vocab.vocabType, false, vocab.vocabSize, vocab.stopTokenIds);
    // xgrammar's own cache is unbounded; ours is an LRU
    const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
    return new GrammarCompiler(xg, info, compiler, vocab, capacity);
  }

  get size(): number {
    return this.#cache.size;
  }

  /** The compiled grammar of a spec (cached; the n choices of one request that ask at once share
   * one compilation). `param` names the request field for errors. */
  compile(spec: GrammarSpec, param: string | null): Promise<XG.CompiledGrammar> {
    const key = JSON.stringify(spec);
    const hit = this.#cache.get(key);
    if (hit) {
      this.#cache.delete(key);
      this.#cache.set(key, hit);
      this.hits++;
      return hit;
    }
    const t0 = performance.now();
    const p = this.#compile(spec).then((compiled) => {
      this.lastCompileMs = performance.now() - t0;
      this.compiles++;
      return compiled;
    }, (e) => {
      this.#cache.delete(key);
      throw new GrammarError(`the grammar does not compile: ${(e as Error).message}`, param);
    });
    this.#cache.set(key, p);
    while (this.#cache.size > this.capacity) {
      const [oldest, g] = this.#cache.entries().next().value!;
      this.#cache.delete(oldest);
      // matchers made from it keep their own reference (embind shared_ptr), so it may go now
      g.then((c) => c.dispose(), () => {});
    }
    return p;
  }

  #compile(spec: GrammarSpec): Promise<XG.CompiledGrammar> {
    const c = this.compiler;
    switch (spec.type) {
      case "json_schema":
        return c.compileJSONSchema(JSON.stringify(lengthsAsPatterns(spec.schema)), false, -1, SEPARATORS, true);
      case "json_object":
        // any object: not strict, or {"type": "object"} would only allow {}
        return c.compileJSONSchema(JSON.stringify({ type: "object" }), false, -1, SEPARATORS, false);
      case "regex":
        return c.compileStructuralTag({ type: "structural_tag", format: { type: "regex", pattern: spec.pattern } });
      case "choice":
        return c.compileStructuralTag({
          type: "structural_tag",
          format: { type: "or", elements: spec.choices.map((value) => ({ type: "const_string", value })) },
        });
      case "grammar":
        return c.compileGrammar(spec.grammar);
      case "structural_tag":
        return this.#compactJson(spec.format).then((format) => c.compileStructuralTag({ type: "structural_tag", format }));
    }
  }

  /** A structural tag's JSON-schema parts as grammars laid out like compile()'s JSON (xgrammar's
   * structural tags allow any whitespace in JSON, which a model may fill forever). */
  async #compactJson(format: unknown): Promise<unknown> {
    if (Array.isArray(format)) return await Promise.all(format.map((f) => this.#compactJson(f)));
    if (!format || typeof format !== "object") return format;
    const o = format as Record<string, unknown>;
    if (o.type === "json_schema") return { type: "grammar", grammar: await this.jsonSchemaEbnf(o.json_schema) };
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) out[k] = k === "json_schema" ? v : await this.#compactJson(v);
    return out;
  }

  /** The EBNF of a JSON schema laid out as compile() lays it out (to embed in a structural tag). */
  async jsonSchemaEbnf(schema: unknown): Promise<string> {
    return await this.xg.Testings._jsonSchemaToEBNF(JSON.stringify(lengthsAsPatterns(schema)), false, -1, SEPARATORS, true);
  }

  /** A matcher for one sequence, with its first mask ready. */
  async matcher(spec: GrammarSpec, param: string | null, stopTokenIds: number[]): Promise<GrammarState> {
    const compiled = await this.compile(spec, param);
    const m = await this.xg.GrammarMatcher.createGrammarMatcher(compiled, stopTokenIds);
    const s = new GrammarState(m, stopTokenIds);
    await s.prepare();
    return s;
  }

  dispose(): void {
    for (const g of this.#cache.values()) g.then((c) => c.dispose(), () => {});
    this.#cache.clear();
    this.compiler.dispose();
    this.info.dispose();
  }
}

/**
 * One sequence's position in its grammar. The mask of the next token is computed right after a
 * token is accepted (xgrammar's call is async only in name: it awaits its own loading), so that it
 * is ready by the next step: the engine yields to the event loop between steps.
 */
export class GrammarState {
  /** The bitmask (bit i of word i>>5: token i allowed) of the next token, or null while pending. */
  mask: Int32Array | null = null;
  #pending: Promise<void> | null = null;
  #disposed = false;

  constructor(readonly matcher: XG.GrammarMatcher, readonly stopTokenIds: number[]) {}

  /** Computes the next mask (no-op when the matcher has ended). */
  prepare(): Promise<void> {
    if (this.#disposed || this.matcher.isTerminated()) return Promise.resolve();
    this.mask = null;
    const p = this.matcher.getNextTokenBitmask().then((m) => {
      if (this.#pending === p) {
        this.mask = m;
        this.#pending = null;
      }
    });
    this.#pending = p;
    return p;
  }

  /** Resolves when the next mask is ready. */
  ready(): Promise<void> {
    return this.#pending ?? Promise.resolve();
  }

  /** Advances on an accepted token; false when the grammar refuses it (the mask was not applied). */
  accept(token: number): boolean {
    if (this.#disposed) return false;
    const ok = this.matcher.acceptToken(token);
    if (ok && !this.matcher.isTerminated()) void this.prepare();
    else this.mask = null;
    return ok;
  }

  /** The grammar has ended (a stop token was accepted where it may end). */
  get terminated(): boolean {
    return !this.#disposed && this.matcher.isTerminated();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.mask = null;
    // a mask still being computed resolves into a disposed state; free after it
    void (this.#pending ?? Promise.resolve()).finally(() => this.matcher.dispose());
  }
}

/** xgrammar 0.1.27 writes a string with minLength/maxLength as `"\"" [^"\\\r\n]{a,b} "\""`, which
 * lets raw control characters into the string: not JSON (found by tests/api/structured_test.ts on
 * random weights). And it counts a character by its UTF-8 lead byte without checking the bytes
 * after it (F4 9E.., F0 82.. pass as one character), so a byte-level model can write ill-formed
 * UTF-8 that the detokenizer turns into several U+FFFD: more characters than maxLength allows.
 * So a length-bounded string is written as a pattern of printable ASCII without the quote and the
 * backslash: a subset of the strings the schema allows (no escapes, no non-ASCII), always JSON,
 * and its length is what the grammar counted. */
export function lengthsAsPatterns(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(lengthsAsPatterns);
  if (!schema || typeof schema !== "object") return schema;
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) o[k] = lengthsAsPatterns(v);
  const min = o.minLength, max = o.maxLength;
  const bounded = typeof min === "number" || typeof max === "number";
  if (bounded && o.pattern === undefined && o.format === undefined && (o.type === "string" || o.type === undefined)) {
    o.pattern = String.raw`^[ !#-\[\]-~]{${typeof min === "number" ? min : 0},${typeof max === "number" ? max : ""}}$`;
    delete o.minLength;
    delete o.maxLength;
  }
  return o;
}

/** Whether token `id` is allowed by `mask`. */
export function allowedBy(mask: Int32Array, id: number): boolean {
  return ((mask[id >>> 5] >>> (id & 31)) & 1) === 1;
}
