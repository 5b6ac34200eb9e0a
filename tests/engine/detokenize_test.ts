// detokenize_test.ts — streamed pieces concatenate to decode(all ids); stop strings across pieces.
import assert from "node:assert/strict";
import { IncrementalDetokenizer } from "../../server/engine/detokenize.ts";
import { Rng } from "../../server/engine/sampling.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { makeModel } from "../../server/model/make_model.ts";
import { STORIES } from "../helpers.ts";

const REF = JSON.parse(Deno.readTextFileSync(`${STORIES}/reference_greedy.json`)) as {
  cases: Array<{ prompt_ids: number[]; generated_ids: number[]; full_text: string }>;
};

let tinyDir: string | null = null;
async function tiny(): Promise<Tokenizer> {
  if (!tinyDir) {
    tinyDir = await Deno.makeTempDir();
    await makeModel({ shape: "tiny", out: tinyDir, seed: 1 });
  }
  return Tokenizer.load(tinyDir);
}

function stream(tok: Tokenizer, prompt: number[], gen: number[], skip: boolean): { prompt: string; pieces: string[] } {
  const d = new IncrementalDetokenizer(tok, { promptIds: prompt, skipSpecialTokens: skip });
  const pieces = gen.map((id) => d.push(id).text);
  pieces.push(d.finish().text);
  for (const p of pieces) {
    // No piece ends in the middle of a surrogate pair.
    if (p.length) assert.ok(!/[\ud800-\udbff]$/.test(p), JSON.stringify(p));
  }
  return { prompt: d.promptText, pieces };
}

function property(tok: Tokenizer, seed: number, vocab: number, withSpecial: boolean) {
  const rng = new Rng(seed);
  const pick = (): number => {
    // Bias towards byte tokens so multi-byte characters get assembled (and broken) often.
    const r = rng.next();
    if (r < 0.3) return Math.floor(rng.next() * Math.min(vocab, 259));
    return Math.floor(rng.next() * vocab);
  };
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(rng.next() * 40);
    const ids = Array.from({ length: n }, pick);
    const cut = Math.floor(rng.next() * (n + 1));
    for (const skip of withSpecial ? [true, false] : [true]) {
      const { prompt, pieces } = stream(tok, ids.slice(0, cut), ids.slice(cut), skip);
      const expected = tok.decode(ids, { skipSpecialTokens: skip });
      assert.equal(prompt + pieces.join(""), expected, `ids ${JSON.stringify(ids)} cut ${cut} skip ${skip}`);
    }
  }
}

Deno.test("stories260K: streamed reference generations equal full_text", async () => {
  const tok = await Tokenizer.load(STORIES);
  for (const c of REF.cases) {
    const { prompt, pieces } = stream(tok, c.prompt_ids, c.generated_ids, true);
    assert.equal(prompt + pieces.join(""), c.full_text);
    // From the very first token (no prompt): the leading space of "▁Once" is stripped once.
    const all = [...c.prompt_ids, ...c.generated_ids];
    const s2 = stream(tok, [], all, true);
    assert.equal(s2.pieces.join(""), c.full_text);
  }
});

Deno.test("stories260K: byte-fallback characters are held until complete", async () => {
  const tok = await Tokenizer.load(STORIES);
  const ids = tok.encode("a ✓ b", { addSpecialTokens: false });
  const d = new IncrementalDetokenizer(tok);
  const pieces = ids.map((id) => [tok.idToToken(id), d.push(id).text]);
  pieces.push(["<end>", d.finish().text]);
  // <0xE2> and <0x9C> emit nothing; <0x93> emits the whole "✓".
  const e2 = pieces.findIndex(([t]) => t === "<0xE2>");
  assert.deepEqual(pieces.slice(e2, e2 + 3).map(([, t]) => t), ["", "", "✓"]);
  assert.equal(pieces.map(([, t]) => t).join(""), "a ✓ b");
  // An incomplete character at the end is flushed as U+FFFD, like decode().
  const d2 = new IncrementalDetokenizer(tok);
  const partial = [tok.tokenToId("<0xE2>")!, tok.tokenToId("<0x9C>")!];
  assert.equal(partial.map((id) => d2.push(id).text).join("") + d2.finish().text, tok.decode(partial));
});

Deno.test("concatenation property: random ids, stories260K", async () => {
  const tok = await Tokenizer.load(STORIES);
  property(tok, 1, 512, true);
});

Deno.test("concatenation property: random ids, tiny byte-level model (incl. padding ids)", async () => {
  const tok = await tiny();
  property(tok, 2, 512, true);
});

Deno.test("stop strings: detected across pieces, nothing past them is emitted", async () => {
  const tok = await Tokenizer.load(STORIES);
  const c = REF.cases[0];
  const text = c.full_text; // "Once upon a time, there was a little girl named Lily. ..."
  for (const stop of ["Lily", "girl named", ".", "park. One", "e w", "zzz"]) {
    for (const include of [false, true]) {
      const d = new IncrementalDetokenizer(tok, { promptIds: c.prompt_ids, stop: [stop, "never-seen"], includeStopString: include });
      let out = "";
      let stopped: string | null = null;
      for (const id of c.generated_ids) {
        const r = d.push(id);
        out += r.text;
        if (r.stopped) {
          stopped = r.stopped;
          break;
        }
      }
      if (!stopped) out += d.finish().text;
      const gen = text.slice(d.promptText.length);
      const at = gen.indexOf(stop);
      if (at < 0) {
        assert.equal(stopped, null);
        assert.equal(out, gen);
      } else {
        assert.equal(stopped, stop);
        assert.equal(out, gen.slice(0, at) + (include ? stop : ""), `stop ${JSON.stringify(stop)}`);
        assert.equal(d.output, out);
        assert.equal(d.push(c.generated_ids[0]).text, "", "nothing after a stop");
      }
    }
  }
});

Deno.test("stop strings: earliest match wins; multi-token stop with held text", async () => {
  const tok = await tiny();
  const ids = tok.encode("Hello world, hello moon", { addSpecialTokens: false });
  const d = new IncrementalDetokenizer(tok, { stop: ["moon", "o w"] });
  const r = d.pushMany(ids);
  assert.equal(r.stopped, "o w");
  assert.equal(r.text, "Hell");
});

Deno.test("stop strings with min_tokens: before the minimum the text streams on whole; the first match after it stops", async () => {
  const tok = await Tokenizer.load(STORIES);
  const c = REF.cases[0];
  const gen = c.full_text.slice(tok.decode(c.prompt_ids).length);
  const stop = ".";
  const first = gen.indexOf(stop);
  assert.ok(first > 0);
  // the token after which the first "." has been decoded, and a minimum past it
  const upTo = (n: number) => tok.decode([...c.prompt_ids, ...c.generated_ids.slice(0, n)]).length - c.full_text.length + gen.length;
  const firstAt = c.generated_ids.findIndex((_, i) => upTo(i + 1) > first) + 1;
  const min = firstAt + 3;
  const d = new IncrementalDetokenizer(tok, { promptIds: c.prompt_ids, stop: [stop], minTokens: min });
  let out = "", stoppedAt = -1;
  for (const [i, id] of c.generated_ids.entries()) {
    const r = d.push(id);
    out += r.text;
    if (r.stopped) {
      stoppedAt = i + 1;
      break;
    }
  }
  // nothing swallowed: everything before the stop that counts is there, the early "." included
  const next = gen.indexOf(stop, upTo(min - 1));
  assert.ok(stoppedAt >= min, `stopped at token ${stoppedAt}, min ${min}`);
  assert.equal(out, gen.slice(0, next), "the text up to the first stop string at or after min_tokens");
  assert.ok(out.includes(stop), "the early stop string was streamed as text");
});

Deno.test("cleanup tiny model dir", async () => {
  if (tinyDir) await Deno.remove(tinyDir, { recursive: true });
});
