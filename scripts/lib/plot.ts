// plot.ts — line charts as PNG, headless: a Vega-Lite spec compiled to Vega, rendered to SVG by
// Vega's renderer-less View, rasterized by resvg (WebAssembly) with the DejaVu Sans font of the
// system (Debian's fonts-dejavu-core; .ci/run installs it). No time or randomness goes in, so the
// same data gives the same bytes.
import * as vega from "vega";
import * as vl from "vega-lite";
import { initWasm, Resvg } from "@resvg/resvg-wasm";

export const FONT_FILE = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT_FAMILY = "DejaVu Sans";

let ready: Promise<void> | null = null;
function init(): Promise<void> {
  ready ??= (async () => {
    const url = import.meta.resolve("@resvg/resvg-wasm/index_bg.wasm");
    const bytes = url.startsWith("file:") ? await Deno.readFile(new URL(url)) : new Uint8Array(await (await fetch(url)).arrayBuffer());
    await initWasm(bytes);
  })();
  return ready;
}

export interface LineChart {
  title: string;
  x: { field: string; title: string; log?: boolean };
  y: { field: string; title: string; log?: boolean; zero?: boolean };
  /** The field whose values are the lines' colours (legend). */
  series: string;
  /** A second field whose values are the lines' dash patterns (no legend: say which is which in the title). */
  dash?: string;
  rows: Record<string, number | string>[];
  /** Marks each data point. */
  points?: boolean;
  width?: number;
  height?: number;
}

/** The chart as SVG text. */
export async function lineChartSvg(c: LineChart): Promise<string> {
  const spec: vl.TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: c.title,
    width: c.width ?? 520,
    height: c.height ?? 300,
    background: "white",
    config: {
      font: FONT_FAMILY,
      axis: { labelFontSize: 11, titleFontSize: 12 },
      legend: { labelFontSize: 11, titleFontSize: 12, symbolType: "stroke", symbolStrokeWidth: 2 },
    },
    data: { values: c.rows },
    mark: { type: "line", point: c.points ?? false },
    encoding: {
      x: {
        field: c.x.field,
        type: "quantitative",
        title: c.x.title,
        scale: c.x.log ? { type: "log", base: 2 } : { zero: false },
        axis: c.x.log ? { values: [...new Set(c.rows.map((r) => r[c.x.field] as number))] } : {},
      },
      y: {
        field: c.y.field,
        type: "quantitative",
        title: c.y.title,
        scale: c.y.log ? { type: "log", nice: false } : { zero: c.y.zero ?? false },
      },
      color: { field: c.series, type: "nominal", title: null },
      ...(c.dash ? { strokeDash: { field: c.dash, type: "nominal" as const, legend: null } } : {}),
    },
  };
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Renders the chart and writes it as a PNG (2× scale); returns the bytes written. */
export async function writeLineChartPng(path: string, c: LineChart): Promise<number> {
  await init();
  const svg = await lineChartSvg(c);
  const font = await Deno.readFile(FONT_FILE);
  const r = new Resvg(svg, {
    fitTo: { mode: "zoom", value: 2 },
    background: "white",
    font: { fontBuffers: [font], defaultFontFamily: FONT_FAMILY, sansSerifFamily: FONT_FAMILY, loadSystemFonts: false },
  });
  const png = r.render().asPng();
  await Deno.writeFile(path, png);
  return png.length;
}
