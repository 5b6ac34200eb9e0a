// detokenize.ts — incremental detokenization with stop strings.
//
// Guarantee: promptText + concat(pieces from push()) + finish() == tokenizer.decode(promptIds +
// generatedIds) (same skipSpecialTokens), when no stop string fires. It holds because the pieces
// are produced from the same per-token bytes as decode(), fed through one streaming TextDecoder
// (which holds back incomplete UTF-8 sequences, e.g. byte-fallback <0xE2><0x9C>…, and yields the
// same characters as a one-shot decode), and the leading-space strip is applied once, to the
// first kept token, exactly as decode() does.
//
// Stop strings: the last (maxStopLength − 1) UTF-16 units are held back so a stop string that
// spans several tokens is seen whole before any of it is emitted. When a stop string appears, the
// text before it is emitted (plus the stop string if includeStopString) and nothing after it.

/** What the detokenizer needs from the tokenizer (server/model/tokenizer.ts's Tokenizer fits). */
export interface DetokenizerSource {
  tokenBytes(id: number): Uint8Array;
  isSpecial(id: number): boolean;
  readonly stripLeadingSpaces: number;
}

export interface DetokenizerOptions {
  skipSpecialTokens?: boolean;
  stop?: string[];
  includeStopString?: boolean;
  /** Prompt ids consumed first (their text goes to promptText, never to pieces). */
  promptIds?: ArrayLike<number>;
  /** Stop strings count only from this many generated tokens on (vLLM's min_tokens): before, the
   * text streams on as if there were none. */
  minTokens?: number;
}

export interface DetokenizeStep {
  /** Text to stream now (may be ""). */
  text: string;
  /** The stop string that matched in this step, or null. After a match, push() returns "". */
  stopped: string | null;
}

export class IncrementalDetokenizer {
  readonly #src: DetokenizerSource;
  readonly #skip: boolean;
  readonly #stops: string[];
  readonly #holdBack: number;
  readonly #includeStop: boolean;
  #decoder = new TextDecoder("utf-8");
  #strip: number;
  #held = "";
  #stopped: string | null = null;
  #finished = false;
  readonly #minTokens: number;
  #pushed = 0;
  /** Text decoded from the prompt ids (complete characters only). */
  readonly promptText: string;
  /** All text emitted for generated tokens so far. */
  output = "";

  constructor(src: DetokenizerSource, opts: DetokenizerOptions = {}) {
    this.#src = src;
    this.#skip = opts.skipSpecialTokens ?? true;
    this.#stops = (opts.stop ?? []).filter((s) => s.length > 0);
    this.#includeStop = opts.includeStopString ?? false;
    this.#minTokens = opts.minTokens ?? 0;
    this.#holdBack = this.#stops.reduce((m, s) => Math.max(m, s.length), 0) - 1;
    this.#strip = src.stripLeadingSpaces;
    let prompt = "";
    for (const id of Array.from(opts.promptIds ?? [])) prompt += this.#decodeToken(id);
    this.promptText = prompt;
  }

  get stopped(): string | null {
    return this.#stopped;
  }

  #decodeToken(id: number): string {
    if (this.#skip && this.#src.isSpecial(id)) return "";
    let b = this.#src.tokenBytes(id);
    if (this.#strip > 0 && b.length > 0) {
      if (b[0] === 0x20) b = b.subarray(1);
      this.#strip = 0;
    }
    return this.#decoder.decode(b, { stream: true });
  }

  /** Feeds one generated token id; returns the text that can be streamed now. */
  push(id: number): DetokenizeStep {
    if (this.#stopped !== null || this.#finished) return { text: "", stopped: null };
    this.#pushed++;
    const s = this.#decodeToken(id);
    if (s.length === 0) return { text: "", stopped: null };
    this.#held += s;
    return this.#release(false);
  }

  /** Feeds several ids; returns the concatenated text and the stop string (if any). */
  pushMany(ids: ArrayLike<number>): DetokenizeStep {
    let text = "";
    for (let i = 0; i < ids.length; i++) {
      const r = this.push(ids[i]);
      text += r.text;
      if (r.stopped !== null) return { text, stopped: r.stopped };
    }
    return { text, stopped: null };
  }

  /**
   * Ends the stream: flushes held text and any incomplete UTF-8 tail (as U+FFFD, like decode()).
   * Call once when the sequence finishes for any reason other than a stop string.
   */
  finish(): DetokenizeStep {
    if (this.#stopped !== null || this.#finished) return { text: "", stopped: null };
    this.#held += this.#decoder.decode();
    this.#finished = true;
    return this.#release(true);
  }

  #release(final: boolean): DetokenizeStep {
    const held = this.#held;
    if (this.#stops.length > 0 && this.#pushed >= this.#minTokens) {
      let best = -1;
      let which = "";
      for (const s of this.#stops) {
        const i = held.indexOf(s);
        if (i >= 0 && (best < 0 || i < best)) {
          best = i;
          which = s;
        }
      }
      if (best >= 0) {
        const text = held.slice(0, best) + (this.#includeStop ? which : "");
        this.#held = "";
        this.#stopped = which;
        this.output += text;
        return { text, stopped: which };
      }
    }
    let cut = final ? held.length : Math.max(0, held.length - Math.max(0, this.#holdBack));
    // Never split a surrogate pair between two pieces.
    if (cut > 0 && cut < held.length) {
      const c = held.charCodeAt(cut - 1);
      if (c >= 0xd800 && c <= 0xdbff) cut--;
    }
    const text = held.slice(0, cut);
    this.#held = held.slice(cut);
    this.output += text;
    return { text, stopped: null };
  }
}
