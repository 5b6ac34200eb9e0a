// main.ts — `deno task bench [suite] [--json FILE]`: runs the benchmark suites (all of them when
// none is named) and prints one table. A suite is the module scripts/bench/<suite>.ts exporting
// `run(): Promise<Row[]>`; a suite whose module does not exist yet is reported as such. The
// references are measured with ../shared/peers: without it a suite that needs it says so in one line.
import { FlagError, helpText, parseFlags } from "../../server/util/flags.ts";
import { PeersMissingError } from "./peers.ts";

/** One measured figure: ours against a reference measured in the same run. */
export interface Row {
  name: string;
  ours: number;
  reference: number | null;
  /** ours / reference (null without a reference). */
  ratio: number | null;
  /** What the ratio (or ours) should reach, e.g. ">= 0.80". */
  target: string | null;
  unit: string;
}

export const SUITES = ["native", "model", "serve", "train"] as const;

function fmt(v: number | null | string): string {
  if (v === null) return "-";
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.01 ? v.toFixed(3) : v.toExponential(2);
}

export function formatTable(rows: (Row & { suite: string })[]): string {
  const head = ["suite", "name", "ours", "reference", "ratio", "target", "unit"];
  const body = rows.map((r) => [r.suite, r.name, fmt(r.ours), fmt(r.reference), fmt(r.ratio), fmt(r.target), r.unit]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(width[i]) : c.padEnd(width[i]))).join("  ");
  return [line(head), width.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

const COMMAND = {
  name: "deno task bench",
  summary: `Runs benchmark suites (${SUITES.join(", ")}; all when none is named) against references measured in the same run ` +
    "with ../shared/peers, and prints one table.",
  positionals: `[${SUITES.join("|")}]...`,
  flags: { json: { type: "string" as const, arg: "FILE", help: "also write the rows as JSON", defaultText: "none" } },
};

async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseFlags(COMMAND, args);
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    if (e.showHelp) console.log(helpText(COMMAND));
    console.error(`${COMMAND.name}: ${e.message}`);
    return 2;
  }
  if (parsed.help) {
    console.log(helpText(COMMAND));
    return 0;
  }
  const json = (parsed.values.json as string | undefined) ?? null;
  const names = parsed.positionals;
  for (const n of names) {
    if (!(SUITES as readonly string[]).includes(n)) {
      console.error(`unknown suite "${n}" (suites: ${SUITES.join(", ")})`);
      return 2;
    }
  }
  const suites = names.length ? names : [...SUITES];
  const all: (Row & { suite: string })[] = [];
  let failed = false;
  for (const suite of suites) {
    const url = new URL(`./${suite}.ts`, import.meta.url);
    try {
      Deno.statSync(url);
    } catch {
      console.log(`suite ${suite}: not yet implemented (no scripts/bench/${suite}.ts)`);
      continue;
    }
    try {
      const mod = await import(url.href) as { run: () => Promise<Row[]> };
      const rows = await mod.run();
      for (const r of rows) all.push({ suite, ...r });
    } catch (e) {
      failed = true;
      if (e instanceof PeersMissingError) console.error(`suite ${suite} skipped: ${e.message}`);
      else console.error(`suite ${suite} failed: ${e instanceof Error ? e.stack : e}`);
    }
  }
  if (all.length) console.log(formatTable(all));
  if (json) {
    const out = all.map((r) => ({
      suite: r.suite,
      name: r.name,
      ours: r.ours,
      reference: r.reference,
      ratio: r.ratio,
      target: r.target,
      unit: r.unit,
    }));
    await Deno.writeTextFile(json, JSON.stringify(out, null, 2) + "\n");
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
