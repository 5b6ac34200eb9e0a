// structured.ts — a request's structured-output fields → the grammar its output must follow
// (engine/grammar.ts compiles it in the engine worker). Shared by chat, completions, and any route
// that translates its own fields into these (e.g. the Responses API's text.format):
//   response_format {type: "json_object"} | {type: "json_schema", json_schema: {name, schema, strict}}
//   structured_outputs (vLLM's extension) {json | regex | choice | grammar | json_object}
// A JSON schema is checked here, on the HTTP thread (a walk, no compilation): xgrammar ignores the
// keywords it does not implement, so each of those is a 400 naming it, never a silent drop.
import type { GrammarSpec } from "../engine/grammar.ts";
import { ClientError } from "../util/errors.ts";

/** The grammar of a request, and the field a grammar error is blamed on. */
export interface GrammarRequest {
  spec: GrammarSpec;
  param: string;
}

export interface ResponseFormat {
  type: string;
  json_schema?: { name?: string; description?: string; schema?: unknown; strict?: boolean | null } | null;
}

export interface StructuredOutputs {
  json?: unknown;
  regex?: string | null;
  choice?: string[] | null;
  grammar?: string | null;
  json_object?: boolean | null;
}

/** Keywords that only annotate (allowed anywhere, no effect on the output). */
const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  // the format of a string is an annotation in JSON Schema 2020-12 (xgrammar enforces the ones it knows)
  "format",
]);
/** Keywords xgrammar turns into grammar (tests/api/structured_test.ts checks outputs against them). */
const SUPPORTED = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "enum",
  "const",
  "anyOf",
  "minLength",
  "maxLength",
  "pattern",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "$ref",
  "$defs",
  "definitions",
]);
const MAX_DEPTH = 32, MAX_NODES = 5000;
const TYPES = new Set(["object", "array", "string", "integer", "number", "boolean", "null"]);

const refuse = (param: string, message: string) => new ClientError(400, message, "unsupported_value", param);
const invalid = (param: string, message: string) => new ClientError(400, message, "invalid_value", param);

/** Checks a regular expression for what xgrammar's regex converter takes: JavaScript's syntax,
 * without lookaround or backreferences (a regular language). */
export function checkRegex(pattern: string, param: string): void {
  if (pattern.length > 4096) throw invalid(param, "the regular expression is longer than 4096 characters");
  try {
    new RegExp(pattern, "u");
  } catch (e) {
    throw invalid(param, `the regular expression does not parse: ${(e as Error).message}`);
  }
  if (/\(\?[=!<]/.test(pattern)) throw refuse(param, "lookaround ((?=, (?!, (?<) is not supported in a regular expression");
  if (/\\[1-9k]/.test(pattern)) throw refuse(param, "backreferences are not supported in a regular expression");
}

/** Checks a JSON-schema pattern: xgrammar writes what the pattern matches into the JSON string as
 * it is, so a pattern that can match a quote, a backslash or a control character (".", \s, a
 * negated class, …) would let the output break its JSON; such patterns are refused by name. */
export function checkJsonPattern(pattern: string, param: string, at: string): void {
  checkRegex(pattern, param);
  const no = (what: string) =>
    refuse(param, `${what} is not supported in a JSON-schema pattern (at ${at}): it could match a character JSON must escape`);
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "\\") {
      const e = pattern[++i];
      if (!/[dw.\-+*?()[\]{}|^$\/]/.test(e)) throw no(`the escape \\${e}`);
      continue;
    }
    if (inClass) {
      if (ch === "]") inClass = false;
      else if (ch === '"') throw no('a quote (")');
      continue;
    }
    if (ch === "[") {
      if (pattern[i + 1] === "^") throw no("a negated class ([^…])");
      inClass = true;
    } else if (ch === ".") throw no('"." (any character)');
    else if (ch === '"') throw no('a quote (")');
    else if (ch.charCodeAt(0) < 0x20) throw no("a control character");
  }
}

/** Checks a JSON schema: every keyword is one the grammar enforces (or an annotation); a 400
 * naming the first other keyword and where it is. */
export function checkJsonSchema(schema: unknown, param: string): void {
  // bounds (OpenAI's are tighter): the walk and the grammar's compilation stay short
  let nodes = 0;
  const walk = (s: unknown, path: string, depth = 0): void => {
    if (depth > MAX_DEPTH) throw invalid(param, `the schema nests deeper than ${MAX_DEPTH} levels (at ${path})`);
    if (++nodes > MAX_NODES) throw invalid(param, `the schema has more than ${MAX_NODES} subschemas`);
    if (typeof s === "boolean") return;
    if (!s || typeof s !== "object" || Array.isArray(s)) throw invalid(param, `${path || "the schema"} is not a JSON schema (an object)`);
    const o = s as Record<string, unknown>;
    for (const [k, v] of Object.entries(o)) {
      const at = `${path}/${k}`;
      if (ANNOTATIONS.has(k)) continue;
      if (!SUPPORTED.has(k)) {
        throw refuse(param, `the JSON-schema keyword "${k}" is not supported (at ${at}); supported: ${[...SUPPORTED].join(", ")}`);
      }
      switch (k) {
        case "type": {
          const ts = Array.isArray(v) ? v : [v];
          for (const t of ts) {
            if (typeof t !== "string" || !TYPES.has(t)) throw invalid(param, `unknown type ${JSON.stringify(t)} (at ${at})`);
          }
          break;
        }
        case "properties":
        case "$defs":
        case "definitions":
          if (!v || typeof v !== "object" || Array.isArray(v)) throw invalid(param, `${k} must be an object (at ${at})`);
          for (const [name, sub] of Object.entries(v)) walk(sub, `${at}/${name}`, depth + 1);
          break;
        case "additionalProperties":
        case "items":
          walk(v, at, depth + 1);
          break;
        case "prefixItems":
        case "anyOf":
          if (!Array.isArray(v) || v.length === 0) throw invalid(param, `${k} must be a non-empty array (at ${at})`);
          v.forEach((sub, i) => walk(sub, `${at}/${i}`, depth + 1));
          break;
        case "required":
          if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
            throw invalid(param, `required must list property names (at ${at})`);
          }
          break;
        case "enum":
          if (!Array.isArray(v) || v.length === 0) throw invalid(param, `enum must be a non-empty array (at ${at})`);
          break;
        case "pattern":
          if (typeof v !== "string") throw invalid(param, `pattern must be a string (at ${at})`);
          checkJsonPattern(v, param, at);
          // xgrammar cannot combine a pattern with length bounds (it would drop the bounds)
          for (const b of ["minLength", "maxLength"]) {
            if (b in o) throw refuse(param, `the JSON-schema keyword "${b}" is not supported together with "pattern" (at ${path}/${b})`);
          }
          break;
        case "$ref":
          if (typeof v !== "string" || !v.startsWith("#")) throw refuse(param, `only local $ref ("#/...") is supported (at ${at})`);
          break;
        case "minItems":
        case "maxItems":
        case "minLength":
        case "maxLength":
          if (!Number.isInteger(v) || (v as number) < 0) throw invalid(param, `${k} must be a non-negative integer (at ${at})`);
          break;
        case "minimum":
        case "maximum":
        case "exclusiveMinimum":
        case "exclusiveMaximum":
          if (typeof v !== "number") throw invalid(param, `${k} must be a number (at ${at})`);
          break;
      }
    }
  };
  walk(schema, "");
}

/** response_format → a grammar (null for text). */
export function responseFormatGrammar(rf: ResponseFormat | null | undefined, param = "response_format"): GrammarRequest | null {
  if (!rf || rf.type === "text") return null;
  if (rf.type === "json_object") return { spec: { type: "json_object" }, param };
  if (rf.type === "json_schema") {
    const js = rf.json_schema;
    if (!js || typeof js !== "object") throw invalid(`${param}.json_schema`, 'response_format type "json_schema" needs json_schema');
    if (typeof js.name !== "string" || !/^[a-zA-Z0-9_-]{1,64}$/.test(js.name)) {
      throw invalid(`${param}.json_schema.name`, "json_schema.name must be 1-64 letters, digits, underscores or dashes");
    }
    // OpenAI: no schema means any JSON object
    if (js.schema === undefined || js.schema === null) return { spec: { type: "json_object" }, param: `${param}.json_schema` };
    checkJsonSchema(js.schema, `${param}.json_schema.schema`);
    return { spec: { type: "json_schema", schema: js.schema as Record<string, unknown> }, param: `${param}.json_schema.schema` };
  }
  throw refuse(`${param}.type`, `response_format type "${rf.type}" is not supported (text, json_object or json_schema)`);
}

/** vLLM's structured_outputs → a grammar (exactly one constraint). */
export function structuredOutputsGrammar(so: StructuredOutputs | null | undefined, param = "structured_outputs"): GrammarRequest | null {
  if (!so) return null;
  const given = (["json", "regex", "choice", "grammar", "json_object"] as const).filter((k) =>
    so[k] !== undefined && so[k] !== null && so[k] !== false
  );
  if (given.length === 0) return null;
  if (given.length > 1) throw invalid(param, `give one of json, regex, choice, grammar or json_object (got ${given.join(", ")})`);
  const k = given[0];
  const at = `${param}.${k}`;
  switch (k) {
    case "json": {
      let schema = so.json;
      if (typeof schema === "string") {
        try {
          schema = JSON.parse(schema);
        } catch {
          throw invalid(at, "structured_outputs.json is a string that is not JSON");
        }
      }
      checkJsonSchema(schema, at);
      return { spec: { type: "json_schema", schema: schema as Record<string, unknown> }, param: at };
    }
    case "json_object":
      return { spec: { type: "json_object" }, param: at };
    case "regex":
      checkRegex(so.regex!, at);
      return { spec: { type: "regex", pattern: so.regex! }, param: at };
    case "choice":
      if (so.choice!.length === 0 || so.choice!.some((c) => typeof c !== "string" || c.length === 0)) {
        throw invalid(at, "choice must list non-empty strings");
      }
      return { spec: { type: "choice", choices: so.choice! }, param: at };
    case "grammar":
      if (!so.grammar!.trim()) throw invalid(at, "grammar is empty");
      if (so.grammar!.length > 65536) throw invalid(at, "the grammar is longer than 64 KiB");
      return { spec: { type: "grammar", grammar: so.grammar! }, param: at };
  }
}

/** At most one source of a grammar per request. */
export function oneGrammar(...gs: (GrammarRequest | null)[]): GrammarRequest | null {
  const set = gs.filter((g): g is GrammarRequest => g !== null);
  if (set.length > 1) {
    throw invalid(set[1].param.split(".")[0], `${set[1].param.split(".")[0]} cannot be combined with ${set[0].param.split(".")[0]}`);
  }
  return set[0] ?? null;
}
