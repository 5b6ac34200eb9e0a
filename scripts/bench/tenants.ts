// tenants.ts — the tenant-isolation rows of `deno task bench serve`, on a server of the serve
// suite's model with keys for two tenants and the default per-tenant limits:
//   - tenant b's request latency p99 while tenant a floods the server (as many long streams as a's
//     share admits, re-sent as they end) against b's p99 with no flood: alternating runs (no
//     flood, flood, no flood, flood, …), the median of the per-pair ratios (target ≤ 2);
//   - GET /health p99 while another process sends 10 MB request bodies that the server refuses
//     while they arrive (413), against /health p99 with no such bodies (target < 50 ms).
import type { Row } from "./main.ts";
import { createServer } from "../../server/server.ts";

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const median = (xs: number[]) => pct(xs, 50);

const TENANT_KEYS = [{ key: "sk-bench-tenant-a", tenant: "a" }, { key: "sk-bench-tenant-b", tenant: "b" }];
const [A, B] = TENANT_KEYS.map((k) => k.key);

/** b's sequential requests; their latencies in ms. */
async function victim(url: string, model: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${B}` },
      body: JSON.stringify({ model, prompt: `${i} Once upon a time`, max_tokens: 16, temperature: 0, ignore_eos: true }),
    });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`tenant b: HTTP ${r.status} ${text}`);
    out.push(performance.now() - t);
  }
  return out;
}

/** Tenant a keeps `width` long requests going until stopped (a 429 waits for its Retry-After). */
function flood(url: string, model: string, width: number): { stop: () => Promise<{ sent: number; refused: number }> } {
  let on = true, sent = 0, refused = 0;
  const lanes = Array.from({ length: width }, async (_, lane) => {
    while (on) {
      const r = await fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${A}` },
        body: JSON.stringify({ model, prompt: `${lane} It was a dark and stormy night`, max_tokens: 64, temperature: 0, ignore_eos: true }),
      });
      await r.body?.cancel().catch(() => {});
      sent++;
      if (r.status === 429) {
        refused++;
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  });
  return {
    stop: async () => {
      on = false;
      await Promise.all(lanes);
      return { sent, refused };
    },
  };
}

/** Polls /health every 5 ms for `ms`; latencies in ms. */
async function pollHealth(url: string, ms: number): Promise<number[]> {
  const out: number[] = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const t = performance.now();
    const r = await fetch(`${url}/health`);
    await r.body?.cancel();
    out.push(performance.now() - t);
    await new Promise((res) => setTimeout(res, 5));
  }
  return out;
}

/** Another process that posts 10 MB chat bodies in a loop for `seconds`. */
function bigBodies(url: string, seconds: number): Deno.ChildProcess {
  const code = `
    const body = JSON.stringify({ model: "m", messages: [{ role: "user", content: "x".repeat(10 * 1024 * 1024) }] });
    const end = Date.now() + ${seconds * 1000};
    let n = 0, statuses = new Set();
    while (Date.now() < end) {
      const r = await fetch(${JSON.stringify(url)} + "/v1/chat/completions", {
        method: "POST", headers: { "content-type": "application/json", authorization: "Bearer ${A}" }, body,
      }).catch((e) => ({ status: "reset", body: null }));
      await r.body?.cancel().catch(() => {});
      statuses.add(r.status);
      n++;
    }
    console.log(JSON.stringify({ sent: n, statuses: [...statuses] }));
  `;
  return new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped", stderr: "inherit" }).spawn();
}

export async function tenantRows(modelDir: string, model: string): Promise<Row[]> {
  const root = await Deno.makeTempDir({ prefix: "qlora-bench-tenants-" });
  const maxNumSeqs = 32;
  const server = await createServer({
    modelDir,
    modelId: model,
    quant: "nf4",
    adapterRoot: `${root}/adapters`,
    dataDir: root,
    threads: Number(Deno.env.get("QLORA_BENCH_THREADS") ?? 2),
    maxNumSeqs,
    keys: TENANT_KEYS,
    env: false,
    log: null,
  });
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, server.app.fetch);
  try {
    // a floods with twice the running batch: its share (half of running + queue) admits them all
    return await measure(`http://127.0.0.1:${srv.addr.port}`, model, 2 * maxNumSeqs);
  } finally {
    await srv.shutdown();
    await server.close();
    await Deno.remove(root, { recursive: true });
  }
}

async function measure(url: string, model: string, floodWidth: number): Promise<Row[]> {
  const pairs = Number(Deno.env.get("QLORA_BENCH_TENANT_PAIRS") ?? 3), N = 12;
  await victim(url, model, 2); // warm
  const calm: number[] = [], flooded: number[] = [], ratios: number[] = [];
  let floodStats = { sent: 0, refused: 0 };
  for (let p = 0; p < pairs; p++) {
    const alone = pct(await victim(url, model, N), 99);
    const f = flood(url, model, floodWidth);
    await new Promise((res) => setTimeout(res, 500)); // the flood fills the batch
    const under = pct(await victim(url, model, N), 99);
    const s = await f.stop();
    floodStats = { sent: floodStats.sent + s.sent, refused: floodStats.refused + s.refused };
    calm.push(alone);
    flooded.push(under);
    ratios.push(under / alone);
  }
  console.log(`tenant flood: a sent ${floodStats.sent} requests (${floodStats.refused} refused with 429) over ${pairs} runs`);

  const quiet = await pollHealth(url, 2000);
  const child = bigBodies(url, 4);
  await new Promise((res) => setTimeout(res, 300));
  const busy = await pollHealth(url, 3000);
  const out = new TextDecoder().decode((await child.output()).stdout).trim();
  console.log(`10 MB bodies: ${out}`);
  return [
    {
      name: `tenant b p99 latency while tenant a floods vs alone (${floodWidth} of a's requests at once; median of ${pairs} pairs)`,
      ours: median(flooded),
      reference: median(calm),
      ratio: median(ratios),
      target: "<= 2",
      unit: "ms",
    },
    {
      name: `GET /health p99 while 10 MB bodies are refused (${busy.length} polls) vs none`,
      ours: pct(busy, 99),
      reference: pct(quiet, 99),
      ratio: pct(busy, 99) / pct(quiet, 99),
      target: "< 50 ms",
      unit: "ms",
    },
  ];
}
