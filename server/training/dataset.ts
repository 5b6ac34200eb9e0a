// dataset.ts — fine-tuning data: JSONL validation (errors name the line), tokenization with
// per-token loss weights, and packing into fixed-size micro-batches.
//
// Formats (one JSON object per line):
//   chat:       {"messages": [{"role": "system"|"user"|"assistant", "content": "...", "weight"?: 0|1}, ...]}
//   prompt:     {"prompt": "...", "completion": "..."}
//   preference: {"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}],
//                "non_preferred_output": [{"role": "assistant", ...}]}   (OpenAI's DPO format)
// Loss is taken on assistant messages (weight 1 by default, "weight": 0 skips one) and on the
// completion; with trainOnInputs every token counts. The chat template renders the messages; a
// message's tokens are the ones its rendering adds to the previous messages' rendering.
//
// Cost: a conversation is tokenized once, whole (linear in its length): the template renders each
// prefix as text only, which fixes where each message starts, and each token takes the weight of
// the message its bytes start in. Only when that cannot be read back exactly (a tokenizer whose
// pieces do not spell the text, or a template whose prefixes are not prefixes of the whole) does it
// fall back to tokenizing every prefix (quadratic; what a 200-message line used to cost always).
import { applyChatTemplate, type ChatMessage, renderChatTemplate, templateRendersTools, templateToolCall } from "../model/chat_template.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { TrainBatch } from "./model.ts";

export class DatasetError extends Error {
  override name = "DatasetError";
  constructor(message: string, readonly line: number | null = null) {
    super(line === null ? message : `line ${line}: ${message}`);
  }
}

/** A function the conversation's assistant may call (OpenAI's fine-tuning format: `tools`). */
export interface ToolDefinition {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export type Example =
  | { kind: "chat"; messages: (ChatMessage & { weight?: number })[]; tools?: ToolDefinition[] }
  | { kind: "prompt"; prompt: string; completion: string }
  | { kind: "preference"; messages: ChatMessage[]; preferred: ChatMessage[]; rejected: ChatMessage[] };

/** Which training method an example serves. */
export const exampleMethod = (ex: Example): "supervised" | "dpo" => (ex.kind === "preference" ? "dpo" : "supervised");

const ROLES = new Set(["system", "user", "assistant", "tool", "developer"]);

/** Parses and validates one line; throws DatasetError naming the line. */
export function parseExample(text: string, line: number): Example {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new DatasetError(`not valid JSON (${(e as Error).message})`, line);
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) throw new DatasetError("each line must be a JSON object", line);
  const o = obj as Record<string, unknown>;
  if ("input" in o || "preferred_output" in o || "non_preferred_output" in o) return parsePreference(o, line);
  if ("messages" in o) {
    const msgs = o.messages;
    if (!Array.isArray(msgs) || msgs.length === 0) throw new DatasetError(`"messages" must be a non-empty array`, line);
    if ("functions" in o) throw new DatasetError(`"functions" (the deprecated form) is not supported: give "tools"`, line);
    const tools = "tools" in o ? checkTools(o.tools, line) : undefined;
    checkMessages(msgs, "messages", line, tools);
    if (!msgs.some((m) => (m as { role: string }).role === "assistant")) {
      throw new DatasetError("the conversation has no assistant message to learn from", line);
    }
    return { kind: "chat", messages: msgs as (ChatMessage & { weight?: number })[], ...(tools ? { tools } : {}) };
  }
  if ("prompt" in o || "completion" in o) {
    if (typeof o.prompt !== "string") throw new DatasetError(`"prompt" must be a string`, line);
    if (typeof o.completion !== "string" || o.completion.length === 0) {
      throw new DatasetError(`"completion" must be a non-empty string`, line);
    }
    return { kind: "prompt", prompt: o.prompt, completion: o.completion };
  }
  throw new DatasetError(`expected {"messages": [...]} or {"prompt": ..., "completion": ...}`, line);
}

/** OpenAI's `tools`: function definitions with a name (and optional description and JSON-schema
 * parameters). */
function checkTools(v: unknown, line: number): ToolDefinition[] {
  if (!Array.isArray(v) || v.length === 0) throw new DatasetError(`"tools" must be a non-empty array`, line);
  v.forEach((t, i) => {
    const f = (t as { function?: Record<string, unknown> })?.function;
    if ((t as { type?: unknown })?.type !== "function" || f === null || typeof f !== "object") {
      throw new DatasetError(`tools[${i}] must be {"type": "function", "function": {...}}`, line);
    }
    if (typeof f.name !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(f.name)) {
      throw new DatasetError(`tools[${i}].function.name must be 1-64 letters, digits, '_', '.', '-'`, line);
    }
    if (f.parameters !== undefined && (f.parameters === null || typeof f.parameters !== "object" || Array.isArray(f.parameters))) {
      throw new DatasetError(`tools[${i}].function.parameters must be a JSON schema object`, line);
    }
  });
  return v as ToolDefinition[];
}

/** An assistant's `tool_calls`: calls of the example's tools with JSON-object arguments text. */
function checkToolCalls(v: unknown, where: string, line: number, tools: ToolDefinition[] | undefined): void {
  if (!Array.isArray(v) || v.length === 0) throw new DatasetError(`${where}.tool_calls must be a non-empty array`, line);
  if (!tools) throw new DatasetError(`${where} calls tools, but the example has no "tools"`, line);
  v.forEach((c, j) => {
    const f = (c as { function?: { name?: unknown; arguments?: unknown } })?.function;
    if ((c as { type?: unknown })?.type !== "function" || !f || typeof f.name !== "string" || typeof f.arguments !== "string") {
      throw new DatasetError(
        `${where}.tool_calls[${j}] must be {"type": "function", "function": {"name", "arguments": "<JSON text>"}}`,
        line,
      );
    }
    if (!tools.some((t) => t.function.name === f.name)) {
      throw new DatasetError(`${where}.tool_calls[${j}] calls "${f.name}", which is not in "tools"`, line);
    }
    let args: unknown;
    try {
      args = JSON.parse(f.arguments as string);
    } catch {
      throw new DatasetError(`${where}.tool_calls[${j}].function.arguments is not JSON text`, line);
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw new DatasetError(`${where}.tool_calls[${j}].function.arguments must encode a JSON object`, line);
    }
  });
}

/** Every message an object with a known role and string content (an assistant's may be null when it
 * calls tools); `weight` 0|1 on assistants only. */
function checkMessages(msgs: unknown[], field: string, line: number, tools?: ToolDefinition[]): void {
  msgs.forEach((m, i) => {
    if (m === null || typeof m !== "object" || Array.isArray(m)) throw new DatasetError(`${field}[${i}] must be an object`, line);
    const mm = m as Record<string, unknown>;
    if (typeof mm.role !== "string" || !ROLES.has(mm.role)) {
      throw new DatasetError(`${field}[${i}].role must be one of ${[...ROLES].join(", ")}`, line);
    }
    if ("tool_calls" in mm && mm.tool_calls !== null) {
      if (mm.role !== "assistant") throw new DatasetError(`${field}[${i}].tool_calls is only allowed on assistant messages`, line);
      checkToolCalls(mm.tool_calls, `${field}[${i}]`, line, tools);
      if (mm.content !== null && mm.content !== undefined && typeof mm.content !== "string") {
        throw new DatasetError(`${field}[${i}].content must be a string or null`, line);
      }
    } else if (typeof mm.content !== "string") throw new DatasetError(`${field}[${i}].content must be a string`, line);
    if ("weight" in mm && mm.weight !== 0 && mm.weight !== 1) throw new DatasetError(`${field}[${i}].weight must be 0 or 1`, line);
    if ("weight" in mm && mm.role !== "assistant") {
      throw new DatasetError(`${field}[${i}].weight is only allowed on assistant messages`, line);
    }
  });
}

/** OpenAI's preference format: one conversation, then the preferred and the non-preferred last turn. */
function parsePreference(o: Record<string, unknown>, line: number): Example {
  const input = o.input as Record<string, unknown> | undefined;
  if (input === null || typeof input !== "object" || Array.isArray(input)) throw new DatasetError(`"input" must be an object`, line);
  if (!Array.isArray(input.messages) || input.messages.length === 0) {
    throw new DatasetError(`"input.messages" must be a non-empty array`, line);
  }
  checkMessages(input.messages, "input.messages", line);
  const outputs = (["preferred_output", "non_preferred_output"] as const).map((field) => {
    const out = o[field];
    if (!Array.isArray(out) || out.length === 0) throw new DatasetError(`"${field}" must be a non-empty array`, line);
    checkMessages(out, field, line);
    out.forEach((m, i) => {
      if ((m as ChatMessage).role !== "assistant") throw new DatasetError(`${field}[${i}].role must be assistant`, line);
    });
    return out as ChatMessage[];
  });
  const messages = (input.messages as (ChatMessage & { weight?: number })[]).map(({ role, content }) => ({ role, content }));
  return { kind: "preference", messages, preferred: outputs[0], rejected: outputs[1] };
}

/** Validates a whole JSONL file; returns the examples (blank lines are skipped). */
export function parseJsonl(text: string, opts: { maxExamples?: number } = {}): Example[] {
  const out: Example[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t.length === 0) continue;
    out.push(parseExample(t, i + 1));
    if (opts.maxExamples && out.length > opts.maxExamples) throw new DatasetError(`more than ${opts.maxExamples} examples`);
  }
  if (out.length === 0) throw new DatasetError("the file has no examples");
  return out;
}

export interface TokenizedExample {
  ids: number[];
  weights: number[]; // loss weight of predicting ids[i] (i ≥ 1) from ids[< i]
}

/** A DPO pair: the same conversation ending in the preferred and in the non-preferred turn, the
 * loss tokens being those turns' tokens. */
export interface TokenizedPair {
  chosen: TokenizedExample;
  rejected: TokenizedExample;
}

function isPrefix(a: number[], b: number[]): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function tokenizeExample(
  tok: Tokenizer,
  ex: Example,
  opts: { trainOnInputs?: boolean; eosTokenId?: number | null } = {},
): TokenizedExample {
  const all = opts.trainOnInputs ?? false;
  if (ex.kind === "preference") throw new DatasetError("a preference example trains with DPO (tokenizePair), not supervised");
  if (ex.kind === "prompt") {
    // One text, as generation will see it: encoding the completion alone would give it a
    // SentencePiece dummy-prefix space (and split merges at the seam). The loss starts at the
    // first token that differs from the prompt's own encoding, so a token straddling the seam
    // (it carries completion text) is learned.
    const p = tok.encode(ex.prompt, { addSpecialTokens: true });
    const ids = tok.encode(ex.prompt + ex.completion, { addSpecialTokens: true });
    let seam = 0;
    while (seam < p.length && seam < ids.length && p[seam] === ids[seam]) seam++;
    if (opts.eosTokenId !== undefined && opts.eosTokenId !== null) ids.push(opts.eosTokenId);
    return { ids, weights: ids.map((_, i) => (i >= seam || (all && i > 0) ? 1 : 0)) };
  }
  const tools = ex.tools;
  if ((tools || ex.messages.some((m) => m.tool_calls)) && !templateRendersTools(tok.chatTemplate)) {
    throw new DatasetError("the example has tools, but the model's chat template does not render tools and tool calls");
  }
  const msgs = ex.messages.map((m) =>
    m.tool_calls
      ? {
        ...m,
        content: m.content ?? "",
        tool_calls: (m.tool_calls as { function: { name: string; arguments: string } }[]).map(templateToolCall),
      }
      : m
  );
  const extra = tools ? { tools } : undefined;
  return tokenizeChatWhole(tok, msgs, all, extra) ?? tokenizeChatByPrefixes(tok, msgs, all, extra);
}

/** Tokenizes the rendered conversation once; null when token bytes cannot be mapped back to it. */
function tokenizeChatWhole(
  tok: Tokenizer,
  msgs: (ChatMessage & { weight?: number })[],
  all: boolean,
  extra?: Record<string, unknown>,
): TokenizedExample | null {
  const render = (n: number, gen: boolean) =>
    renderChatTemplate(tok.chatTemplate, msgs.slice(0, n) as ChatMessage[], {
      addGenerationPrompt: gen,
      bosToken: tok.bosToken,
      eosToken: tok.eosToken,
      extra,
    });
  const full = render(msgs.length, false);
  const enc = new TextEncoder();
  // [start, end, weight) byte spans of the rendered text, message by message
  const spans: [number, number][] = []; // [end byte, weight]
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    if (m.role === "assistant") {
      // the assistant's header (generation prompt) belongs to the input, its content to the output
      const head = render(i, true);
      if (full.startsWith(head)) spans.push([enc.encode(head).length, all ? 1 : 0]);
    }
    const cur = i === msgs.length - 1 ? full : render(i + 1, false);
    if (!full.startsWith(cur)) return null;
    spans.push([enc.encode(cur).length, m.role === "assistant" ? (m.weight ?? 1) : all ? 1 : 0]);
  }
  const ids = tok.encode(full, { addSpecialTokens: false });
  // each token's first byte in the text: the token pieces must spell it exactly
  const bytes = enc.encode(full);
  const weights = new Array<number>(ids.length);
  let at = 0, span = 0;
  for (let t = 0; t < ids.length; t++) {
    let b = tok.tokenBytes(ids[t]);
    // a SentencePiece dummy prefix: the space each text segment (at the start, and after a special
    // token) gains in encoding, which the text does not have
    if (tok.stripLeadingSpaces > 0 && b[0] === 0x20 && (t === 0 || tok.isSpecial(ids[t - 1]))) b = b.subarray(1);
    for (let j = 0; j < b.length; j++) if (bytes[at + j] !== b[j]) return null;
    while (span < spans.length - 1 && spans[span][0] <= at) span++;
    weights[t] = spans[span][1];
    at += b.length;
  }
  if (at !== bytes.length) return null;
  if (ids.length > 0) weights[0] = 0; // nothing predicts the first token
  return { ids, weights };
}

/** The reference method: each message's tokens are what its prefix's tokenization adds. */
export function tokenizeChatByPrefixes(
  tok: Tokenizer,
  msgs: (ChatMessage & { weight?: number })[],
  all: boolean,
  extra?: Record<string, unknown>,
): TokenizedExample {
  const ids: number[] = [];
  const weights: number[] = [];
  let prev: number[] = [];
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    // the assistant's header (generation prompt) belongs to the input, its content to the output
    if (m.role === "assistant") {
      const head = applyChatTemplate(tok, msgs.slice(0, i) as ChatMessage[], { addGenerationPrompt: true, extra }).ids;
      if (isPrefix(prev, head)) {
        for (let j = prev.length; j < head.length; j++) {
          ids.push(head[j]);
          weights.push(all ? 1 : 0);
        }
        prev = head;
      }
    }
    const cur = applyChatTemplate(tok, msgs.slice(0, i + 1) as ChatMessage[], { addGenerationPrompt: false, extra }).ids;
    if (!isPrefix(prev, cur)) {
      throw new DatasetError(`the chat template does not render message ${i} as an extension of the ones before it`);
    }
    const w = m.role === "assistant" ? (m.weight ?? 1) : all ? 1 : 0;
    for (let j = prev.length; j < cur.length; j++) {
      ids.push(cur[j]);
      weights.push(w);
    }
    prev = cur;
  }
  if (ids.length > 0) weights[0] = 0; // nothing predicts the first token
  return { ids, weights };
}

/** A preference example as a DPO pair; only the final (preferred / non-preferred) turns carry loss. */
export function tokenizePair(tok: Tokenizer, ex: Example, opts: { eosTokenId?: number | null } = {}): TokenizedPair {
  if (ex.kind !== "preference") throw new DatasetError(`a ${ex.kind} example trains supervised, not with DPO`);
  const side = (out: ChatMessage[]) =>
    tokenizeExample(tok, {
      kind: "chat",
      messages: [...ex.messages.map((m) => ({ ...m, weight: 0 })), ...out.map((m) => ({ ...m, weight: 1 }))],
    }, { eosTokenId: opts.eosTokenId });
  return { chosen: side(ex.preferred), rejected: side(ex.rejected) };
}

/** A micro-batch of packed examples, ready for LoraTrainingModel.forwardBackward. */
export function packBatch(examples: TokenizedExample[], maxSeqLen: number): TrainBatch {
  const tokens: number[] = [], targets: number[] = [], positions: number[] = [], lossWeights: number[] = [];
  const cu = [0];
  for (const ex of examples) {
    const n = Math.min(ex.ids.length, maxSeqLen);
    for (let i = 0; i < n; i++) {
      tokens.push(ex.ids[i]);
      positions.push(i);
      const hasNext = i + 1 < n;
      targets.push(hasNext && ex.weights[i + 1] > 0 ? ex.ids[i + 1] : -1);
      lossWeights.push(hasNext ? ex.weights[i + 1] : 0);
    }
    cu.push(tokens.length);
  }
  return {
    tokens: Int32Array.from(tokens),
    targets: Int32Array.from(targets),
    positions: Int32Array.from(positions),
    lossWeights: Float32Array.from(lossWeights),
    cuSeqlens: Int32Array.from(cu),
  };
}

/**
 * One epoch's optimizer steps. A step is `batchSize` items (examples, or DPO pairs), as in
 * OpenAI's API ("number of examples in each batch"); the last step of an epoch may hold fewer.
 * Packing is only how a step is cut for memory: its items go first-fit, in order, into
 * micro-batches of at most `microBatchTokens` tokens (`tokensOf` an item; one item alone may
 * exceed it), and at least `minMicroBatches` of them when the step has that many items.
 */
export function makeSteps<T>(
  items: T[],
  batchSize: number,
  tokensOf: (item: T) => number,
  opts: { microBatchTokens: number; minMicroBatches?: number },
): T[][][] {
  const steps: T[][][] = [];
  for (let i = 0; i < items.length; i += batchSize) {
    const group = items.slice(i, i + batchSize);
    const parts = Math.min(group.length, Math.max(1, opts.minMicroBatches ?? 1));
    const perPart = Math.ceil(group.length / parts);
    const micro: T[][] = [];
    for (let p = 0; p < group.length; p += perPart) {
      let cur: T[] = [];
      let used = 0;
      for (const item of group.slice(p, p + perPart)) {
        const n = tokensOf(item);
        if (used + n > opts.microBatchTokens && cur.length > 0) {
          micro.push(cur);
          cur = [];
          used = 0;
        }
        cur.push(item);
        used += n;
      }
      if (cur.length > 0) micro.push(cur);
    }
    steps.push(micro);
  }
  return steps;
}

/** Tokens that carry loss in a micro-batch (how a step's micro-batches are weighted). */
export function lossTokenCount(examples: TokenizedExample[], maxSeqLen: number): number {
  let n = 0;
  for (const ex of examples) {
    const len = Math.min(ex.ids.length, maxSeqLen);
    for (let i = 1; i < len; i++) if (ex.weights[i] > 0) n++;
  }
  return n;
}
