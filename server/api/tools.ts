// tools.ts — tool calling, apart from any route: which text format the model's chat template uses
// for tool calls, the grammar that forces a call (tool_choice required or a named function), and
// the parser that turns the model's text into OpenAI's tool calls, whole or as stream deltas.
//
// Formats (chosen from the chat template's text; Hermes when it says nothing):
//   hermes   <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   (Hermes, Qwen2.5, Qwen3)
//   llama3   {"name": "f", "parameters": {...}}  (several joined by "; ")    (Llama 3.1/3.2 JSON tool calling)
//   mistral  [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]           (Mistral v3 tokenizers)
// `arguments` is the model's own JSON text of the arguments (streamed pieces concatenate to it).
import type { GrammarSpec } from "../engine/grammar.ts";
import { ClientError } from "../util/errors.ts";
import { checkJsonSchema, type GrammarRequest } from "./structured.ts";

export type ToolFormat = "hermes" | "llama3" | "mistral";

export interface FunctionTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

export type ToolChoiceValue = "none" | "auto" | "required" | { type: "function"; function: { name: string } };

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** The tool-call format a chat template writes (Hermes when the template does not say). */
export function toolFormatOf(template: string | null | undefined): ToolFormat {
  const t = template ?? "";
  if (t.includes("<tool_call>")) return "hermes";
  if (t.includes("[TOOL_CALLS]")) return "mistral";
  if (t.includes("<|python_tag|>") || (t.includes("ipython") && t.includes('"parameters"'))) return "llama3";
  return "hermes";
}

/** What a request's tools mean for generation: the tools for the template, whether to parse the
 * output, and the grammar of a forced call. */
export interface ToolPlan {
  tools: FunctionTool[];
  format: ToolFormat;
  /** Parse the output for tool calls (tools given and tool_choice is not none). */
  parse: boolean;
  /** The grammar of a forced call (required or named), or null. */
  grammar: GrammarRequest | null;
}

const ARGS_KEY: Record<ToolFormat, string> = { hermes: "arguments", llama3: "parameters", mistral: "arguments" };

/** Checks tools and tool_choice and plans the request (null: no tools). */
export function planTools(
  tools: FunctionTool[] | null | undefined,
  choice: ToolChoiceValue | null | undefined,
  parallel: boolean | null | undefined,
  template: string | null | undefined,
): ToolPlan | null {
  if (!tools || tools.length === 0) {
    if (choice && choice !== "none") throw new ClientError(400, "tool_choice needs tools", "invalid_value", "tool_choice");
    return null;
  }
  const names = new Set<string>();
  tools.forEach((t, i) => {
    if (names.has(t.function.name)) {
      throw new ClientError(400, `two tools are named "${t.function.name}"`, "invalid_value", `tools[${i}].function.name`);
    }
    names.add(t.function.name);
  });
  const format = toolFormatOf(template);
  const c = choice ?? "auto";
  let forced: FunctionTool[] | null = null;
  if (c === "required") forced = tools;
  else if (typeof c === "object") {
    const t = tools.find((x) => x.function.name === c.function.name);
    if (!t) throw new ClientError(400, `tool_choice names "${c.function.name}", which is not in tools`, "invalid_value", "tool_choice");
    forced = [t];
  }
  // a forced call's parameters become grammar: what it cannot enforce is refused by name (with
  // auto or none they only reach the template, so any schema goes)
  for (const t of forced ?? []) {
    if (t.function.parameters) checkJsonSchema(t.function.parameters, `tools[${tools.indexOf(t)}].function.parameters`);
  }
  const grammar = forced ? { spec: forcedCallGrammar(format, forced, parallel !== false && typeof c !== "object"), param: "tools" } : null;
  return { tools, format, parse: c !== "none", grammar };
}

/** The JSON schema of one call object: the name first, so that a stream can name the call early. */
function callSchema(format: ToolFormat, tools: FunctionTool[]): Record<string, unknown> {
  const one = (t: FunctionTool) => ({
    type: "object",
    properties: {
      name: { const: t.function.name },
      [ARGS_KEY[format]]: t.function.parameters ?? { type: "object", properties: {} },
    },
    required: ["name", ARGS_KEY[format]],
  });
  return tools.length === 1 ? one(tools[0]) : { anyOf: tools.map(one) };
}

/** The grammar of a forced call: one call (or several with `parallel`) in the template's format,
 * then the end of the output. */
export function forcedCallGrammar(format: ToolFormat, tools: FunctionTool[], parallel: boolean): GrammarSpec {
  const schema = callSchema(format, tools);
  if (format === "mistral") {
    const array = { type: "array", items: schema, minItems: 1, ...(parallel ? {} : { maxItems: 1 }) };
    return {
      type: "structural_tag",
      format: {
        type: "sequence",
        elements: [{ type: "const_string", value: "[TOOL_CALLS]" }, { type: "json_schema", json_schema: array }],
      },
    };
  }
  const tag = format === "hermes"
    ? { type: "tag", begin: "<tool_call>\n", content: { type: "json_schema", json_schema: schema }, end: "\n</tool_call>" }
    : { type: "tag", begin: "", content: { type: "json_schema", json_schema: schema }, end: "" };
  return {
    type: "structural_tag",
    format: {
      type: "tags_with_separator",
      tags: [tag],
      separator: format === "hermes" ? "\n" : "; ",
      at_least_one: true,
      stop_after_first: !parallel,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Parsing the model's text. One parser for both uses: it reads the text so far and says what is
// settled (content, and per call its name and the arguments text so far); a stream sends what
// grew since the last read, and the whole response reads the final text once.

export interface PartialCall {
  name: string | null;
  /** The arguments' JSON text so far (complete when argsDone). */
  args: string;
  argsDone: boolean;
  /** The call's object is closed. */
  done: boolean;
}

export interface ParsedOutput {
  /** Content before the calls (held back while it could still become a call marker). */
  content: string;
  calls: PartialCall[];
}

const MARKER: Record<ToolFormat, string> = { hermes: "<tool_call>", llama3: "{", mistral: "[TOOL_CALLS]" };

/** The length of the longest suffix of `text` that is a proper prefix of `marker`. */
function partialMarker(text: string, marker: string): number {
  for (let n = Math.min(marker.length - 1, text.length); n > 0; n--) if (marker.startsWith(text.slice(text.length - n))) return n;
  return 0;
}

/** Reads a JSON string starting at text[i] === '"': its value and the index after it, or null
 * when it is not closed yet. */
function readString(text: string, i: number): { value: string; end: number } | null {
  for (let j = i + 1; j < text.length; j++) {
    if (text[j] === "\\") j++;
    else if (text[j] === '"') {
      try {
        return { value: JSON.parse(text.slice(i, j + 1)), end: j + 1 };
      } catch {
        return { value: text.slice(i + 1, j), end: j + 1 };
      }
    }
  }
  return null;
}

/** The index after the JSON value starting at text[i], or -1 when it is not complete yet (a
 * number at the very end counts as complete only when `final`). */
function skipValue(text: string, i: number, final: boolean): number {
  const c = text[i];
  if (c === '"') return readString(text, i)?.end ?? -1;
  if (c === "{" || c === "[") {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const ch = text[j];
      if (ch === '"') {
        const s = readString(text, j);
        if (!s) return -1;
        j = s.end - 1;
      } else if (ch === "{" || ch === "[") depth++;
      else if (ch === "}" || ch === "]") {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    return -1;
  }
  let j = i;
  while (j < text.length && !/[\s,}\]]/.test(text[j])) j++;
  return j < text.length || final ? j : -1;
}

const ws = (text: string, i: number) => {
  while (i < text.length && /\s/.test(text[i])) i++;
  return i;
};

/** Reads one call object starting at text[i] === "{"; returns it and the index after it. */
function readCall(text: string, i: number, argsKey: string, final: boolean): { call: PartialCall; end: number } {
  const call: PartialCall = { name: null, args: "", argsDone: false, done: false };
  let j = ws(text, i + 1);
  while (j < text.length) {
    if (text[j] === "}") {
      call.done = true;
      return { call, end: j + 1 };
    }
    if (text[j] === ",") {
      j = ws(text, j + 1);
      continue;
    }
    if (text[j] !== '"') break;
    const key = readString(text, j);
    if (!key) break;
    j = ws(text, key.end);
    if (text[j] !== ":") break;
    j = ws(text, j + 1);
    if (j >= text.length) break;
    if (key.value === "name" && text[j] === '"') {
      const v = readString(text, j);
      if (!v) break;
      call.name = v.value;
      j = ws(text, v.end);
      continue;
    }
    const end = skipValue(text, j, final);
    if (key.value === argsKey || key.value === "arguments" || key.value === "parameters") {
      call.args = end < 0 ? text.slice(j).trimEnd() : text.slice(j, end);
      call.argsDone = end >= 0;
    }
    if (end < 0) break;
    j = ws(text, end);
  }
  return { call, end: text.length };
}

/** Parses the text so far (`final`: the whole output). */
export function parseToolOutput(format: ToolFormat, text: string, final: boolean): ParsedOutput {
  const argsKey = ARGS_KEY[format];
  const marker = MARKER[format];
  let start: number;
  if (format === "llama3") {
    const t = text.replace(/^\s*(<\|python_tag\|>)?\s*/, "");
    const lead = text.length - t.length;
    if (!t.startsWith("{")) {
      // only whitespace so far: it may still be a call
      return { content: t.length === 0 && !final ? "" : text, calls: [] };
    }
    start = lead;
  } else {
    let m = text.indexOf(marker);
    // a Mistral tokenizer's [TOOL_CALLS] is a special token the detokenizer drops: the array alone
    if (m < 0 && format === "mistral" && /^\s*\[\s*\{\s*"name"/.test(text)) m = text.indexOf("[") - marker.length;
    if (m < 0) {
      const hold = final ? 0 : partialMarker(text, marker);
      return { content: text.slice(0, text.length - hold), calls: [] };
    }
    start = m + marker.length;
  }
  const content = format === "llama3" ? "" : text.slice(0, Math.max(0, start - marker.length));
  const calls: PartialCall[] = [];
  let i = start;
  while (i < text.length) {
    // skip what lies between calls: whitespace, separators, the array's brackets, tags
    i = ws(text, i);
    if (text.startsWith("</tool_call>", i)) {
      i += "</tool_call>".length;
      continue;
    }
    if (text.startsWith(marker, i) && format !== "llama3") {
      i += marker.length;
      continue;
    }
    if (i >= text.length) break;
    const ch = text[i];
    if (ch === "," || ch === ";" || ch === "[" || ch === "]") {
      i++;
      continue;
    }
    if (ch !== "{") break;
    const r = readCall(text, i, argsKey, final);
    calls.push(r.call);
    if (!r.call.done) break;
    i = r.end;
  }
  return { content, calls };
}

/** A call id as OpenAI writes them. */
export function toolCallId(): string {
  return `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/** The whole output → content and tool calls (null when the text holds no complete valid call:
 * then it is all content). */
export function toolCallsOf(format: ToolFormat, text: string): { content: string | null; calls: ToolCall[] } | null {
  const p = parseToolOutput(format, text, true);
  if (p.calls.length === 0) return null;
  const calls: ToolCall[] = [];
  for (const c of p.calls) {
    if (!c.done || c.name === null || !c.argsDone) return null;
    try {
      JSON.parse(c.args);
    } catch {
      return null;
    }
    calls.push({ id: toolCallId(), type: "function", function: { name: c.name, arguments: c.args } });
  }
  const content = p.content.trim();
  return { content: content.length > 0 ? content : null, calls };
}

/** One piece of a tool call in a stream (OpenAI's delta.tool_calls[i]). */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function: { name?: string; arguments: string };
}

/** Turns a stream of text pieces into content pieces and tool-call deltas: a call is announced
 * (index, id, type, name) once its name is read, then its arguments follow as they are written. */
export class ToolStreamParser {
  #text = "";
  #sentContent = 0;
  #sent: { id: string; args: number }[] = [];
  constructor(readonly format: ToolFormat) {}

  /** The calls announced so far (their ids, for the finish reason). */
  get calls(): number {
    return this.#sent.length;
  }

  push(piece: string, final = false): { content: string; toolCalls: ToolCallDelta[] } {
    this.#text += piece;
    const p = parseToolOutput(this.format, this.#text, final);
    let content = "";
    if (p.content.length > this.#sentContent && this.#sent.length === 0) {
      content = p.content.slice(this.#sentContent);
      this.#sentContent = p.content.length;
    }
    const toolCalls: ToolCallDelta[] = [];
    p.calls.forEach((c, index) => {
      if (c.name === null) return;
      let s = this.#sent[index];
      if (!s) {
        if (index !== this.#sent.length) return; // announce in order
        s = this.#sent[index] = { id: toolCallId(), args: 0 };
        toolCalls.push({ index, id: s.id, type: "function", function: { name: c.name, arguments: "" } });
      }
      if (c.args.length > s.args) {
        toolCalls.push({ index, function: { arguments: c.args.slice(s.args) } });
        s.args = c.args.length;
      }
    });
    return { content, toolCalls };
  }
}
