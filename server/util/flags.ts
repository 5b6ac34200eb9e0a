// flags.ts — command-line flags defined once (name, type, default, help): the same table gives
// node:util parseArgs its options, the --help text, and the checks of each value. Used by
// server/main.ts and every scripts/ command.
import { parseArgs } from "node:util";

export interface FlagSpec {
  /** "int" (non-negative) and "number" are parsed and checked. */
  type: "string" | "boolean" | "int" | "number";
  default?: string | number | boolean;
  /** The placeholder shown in help (e.g. DIR, N); default by type. */
  arg?: string;
  /** Allowed values of a string flag. */
  choices?: readonly string[];
  help: string;
  /** Text shown as the default when the default is computed (e.g. "./data"). */
  defaultText?: string;
}

export type FlagSpecs = Record<string, FlagSpec>;
export type FlagValues = Record<string, string | number | boolean | undefined>;

export interface Command {
  /** e.g. "deno task start" */
  name: string;
  /** One line or a few: what the command does (shown first in help). */
  summary: string;
  /** e.g. "[MODE]" when positionals are accepted. */
  positionals?: string;
  flags: FlagSpecs;
}

/** A bad command line: one line for stderr; the caller exits 2. */
export class FlagError extends Error {
  override name = "FlagError";
  /** An unknown flag or a missing value: the answer lists the flags. */
  constructor(message: string, readonly showHelp = false) {
    super(message);
  }
}

function placeholder(s: FlagSpec): string {
  if (s.type === "boolean") return "";
  if (s.arg) return ` ${s.arg}`;
  if (s.choices) return ` ${s.choices.join("|")}`;
  return s.type === "string" ? " VALUE" : " N";
}

/** The help text: usage, then one line per flag with its default. */
export function helpText(cmd: Command): string {
  const rows = Object.entries(cmd.flags).map(([name, s]) => {
    const left = `  --${name}${placeholder(s)}`;
    const def = s.defaultText ?? (s.default === undefined || s.type === "boolean" ? undefined : String(s.default));
    return [left, s.help + (def !== undefined ? ` (default: ${def})` : "")];
  });
  rows.push(["  --help", "this list"]);
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  const lines = [`usage: ${cmd.name}${cmd.positionals ? ` ${cmd.positionals}` : ""} [flags]`, "", cmd.summary, "", "flags:"];
  for (const [l, r] of rows) lines.push(l.padEnd(width) + r);
  return lines.join("\n");
}

/** Parses `args` against the command's flags; throws FlagError for an unknown flag or a bad value. */
export function parseFlags(cmd: Command, args: string[]): { values: FlagValues; positionals: string[]; help: boolean } {
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const [name, s] of Object.entries(cmd.flags)) options[name] = { type: s.type === "boolean" ? "boolean" : "string" };
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: cmd.positionals !== undefined });
  } catch (e) {
    // node's messages: "Unknown option '--x'. …", "Option '--port <value>' argument missing"
    const m = (e as Error).message.split("\n")[0].replace(/\. To specify a positional argument.*$/, "");
    throw new FlagError(m.replace(/^Unknown option/, "unknown flag"), true);
  }
  const raw = parsed.values as Record<string, string | boolean | undefined>;
  const values: FlagValues = {};
  for (const [name, s] of Object.entries(cmd.flags)) {
    const v = raw[name];
    if (v === undefined) {
      values[name] = s.default;
      continue;
    }
    if (s.type === "boolean") values[name] = v;
    else if (s.type === "int" || s.type === "number") {
      const n = Number(v);
      if (v === "" || !Number.isFinite(n) || (s.type === "int" && (!Number.isInteger(n) || n < 0))) {
        throw new FlagError(`--${name} must be ${s.type === "int" ? "a non-negative integer" : "a number"} (got "${v}")`);
      }
      values[name] = n;
    } else {
      if (s.choices && !s.choices.includes(v as string)) throw new FlagError(`--${name} must be ${s.choices.join(", ")} (got "${v}")`);
      values[name] = v;
    }
  }
  return { values, positionals: parsed.positionals, help: raw.help === true };
}

/**
 * parseFlags for a command's main: `--help` prints the help and exits 0; a bad command line prints
 * one line on stderr, the help on stdout, and exits 2.
 */
export function parseCommandLine(cmd: Command, args: string[] = Deno.args): { values: FlagValues; positionals: string[] } {
  let r;
  try {
    r = parseFlags(cmd, args);
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    if (e.showHelp) console.log(helpText(cmd));
    console.error(`${cmd.name}: ${e.message}${e.showHelp ? " (the flags are listed above)" : ""}`);
    Deno.exit(2);
  }
  if (r.help) {
    console.log(helpText(cmd));
    Deno.exit(0);
  }
  return r;
}

/** Prints one line on stderr and exits 2 (a usage or start error: no stack trace). */
export function fail(cmd: Pick<Command, "name">, message: string): never {
  console.error(`${cmd.name}: ${message.split("\n")[0]}`);
  Deno.exit(2);
}
