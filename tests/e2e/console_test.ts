// console_test.ts — the web console in a real headless browser (Debian's chromium, driven by
// puppeteer-core) against a server on 127.0.0.1 with two tenants and an admin: sign-in (a wrong key shows the
// server's message), tenancy (tenant B's objects never show for A, nor A's for B; an admin sees both), an upload with a
// bad line, a fine-tune on stories260K whose loss curve gains points while it runs, cancel,
// adapter load/unload, a streamed playground answer from two models side by side, the server page,
// and /docs rendering with every request that would leave the machine refused. Screenshots of each
// page go to $CONSOLE_SCREENSHOTS (default: a temporary folder, printed).
// Chromium: $CHROMIUM, else /usr/bin/chromium (`apt-get install -y chromium`, as .ci/run does).
import assert from "node:assert/strict";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import type { Server } from "../../server/server.ts";
import { makeAdapter, STORIES_SHAPE, storiesServer } from "../helpers.ts";

const KEY_A = "sk-console-tenant-a", KEY_B = "sk-console-tenant-b", KEY_ADMIN = "sk-console-admin";
const JSON_HEADERS = { "content-type": "application/json" };
const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";
const CHAT_TEMPLATE = Deno.readTextFileSync(new URL("../../models/stories260K/chat_template.jinja", import.meta.url));

function serve(s: Server): { url: string; shutdown: () => Promise<void> } {
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
  return {
    url: `http://127.0.0.1:${srv.addr.port}`,
    shutdown: async () => {
      await srv.shutdown();
      await s.close();
    },
  };
}

/** n prompt/completion examples (the fixture model has no chat template of its own). */
function storyJsonl(n: number): string {
  const lines = [];
  for (let i = 0; i < n; i++) {
    lines.push(JSON.stringify({ prompt: `Tom had a ball number ${i}.`, completion: " He liked to play with it." }));
  }
  return lines.join("\n") + "\n";
}

async function apiAs(url: string, key: string, path: string, init: RequestInit = {}): Promise<unknown> {
  const res = await fetch(`${url}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...init.headers } });
  const text = await res.text();
  assert.ok(res.ok, `${path}: ${res.status} ${text}`);
  return text.startsWith("{") ? JSON.parse(text) : text;
}

const text = (page: Page, sel: string) => page.$eval(sel, (e) => e.textContent ?? "");
// the browser-side code below is given as strings or typed loosely: these tests type-check
// without the DOM library, which clashes with Deno's
const setValue = (page: Page, sel: string, value: string) =>
  page.$eval(sel, (e, v) => ((e as unknown as { value: string }).value = v), value);

Deno.test({
  name: "console: sign-in, tenancy, admin, upload errors, a live loss curve, cancel, load/unload, side-by-side streaming, /docs offline",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    try {
      await Deno.stat(CHROMIUM);
    } catch {
      throw new Error(`no chromium at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM`);
    }
    const t0 = performance.now();
    const root = await Deno.makeTempDir({ prefix: "qlora-console-" });
    const shots = Deno.env.get("CONSOLE_SCREENSHOTS") ?? (await Deno.makeTempDir({ prefix: "qlora-console-shots-" }));
    await Deno.mkdir(shots, { recursive: true });
    const s = await storiesServer(root, {
      keys: [{ key: KEY_A, tenant: "a" }, { key: KEY_B, tenant: "b" }, { key: KEY_ADMIN, admin: true }],
      chatTemplate: CHAT_TEMPLATE,
    });
    const { url, shutdown } = serve(s);
    let browser: Browser | null = null;
    try {
      // tenant B's objects, made through the API: A's console must never show them
      const formB = new FormData();
      formB.set("purpose", "fine-tune");
      formB.set("file", new Blob([storyJsonl(4)]), "b-private.jsonl");
      await apiAs(url, KEY_B, "/v1/files", { method: "POST", body: formB });
      await makeAdapter(`${root}/adapters/b/secret`, STORIES_SHAPE, { seed: 5 });
      await apiAs(url, KEY_B, "/v1/adapters", {
        method: "POST",
        headers: JSON_HEADERS,
        body: JSON.stringify({ id: "b-adapter", path: "b/secret" }),
      });
      // tenant A's adapter, registered but not resident
      await makeAdapter(`${root}/adapters/a/mine`, STORIES_SHAPE, { seed: 9, r: 4, bScale: 1 });
      await apiAs(url, KEY_A, "/v1/adapters", {
        method: "POST",
        headers: JSON_HEADERS,
        body: JSON.stringify({ id: "a-adapter", path: "a/mine" }),
      });

      browser = await puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        // --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
      });
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 900 });
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));

      // sign-in: a wrong key shows the server's message, the right one opens the console
      await page.goto(`${url}/console/files`);
      await page.waitForSelector("#login:not([hidden])");
      await page.type("#api-key", "sk-wrong-key-123");
      await page.click("#login-form button[type=submit]");
      await page.waitForFunction(`document.querySelector("#login-error").textContent.includes("incorrect API key")`);
      await page.screenshot({ path: `${shots}/login.png` });
      await setValue(page, "#api-key", "");
      await page.type("#api-key", KEY_A);
      await Promise.all([page.waitForNavigation(), page.click("#login-form button[type=submit]")]);
      await page.waitForSelector("body[data-ready=true]");

      // files: a bad line is named, with the line; a good file lists; B's file does not
      const bad = `${root}/bad.jsonl`, good = `${root}/stories.jsonl`;
      await Deno.writeTextFile(bad, `${JSON.stringify({ prompt: "a", completion: " b" })}\n{not json\n`);
      await Deno.writeTextFile(good, storyJsonl(24));
      const input = (await page.$("#upload-file"))!;
      await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(bad);
      await page.click("#upload-form button[type=submit]");
      await page.waitForFunction(`/line 2/.test(document.querySelector("#upload-error").textContent)`);
      assert.match(await text(page, "#upload-error .bad-line"), /^2: \{not json/);
      await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(good);
      await page.click("#upload-form button[type=submit]");
      await page.waitForFunction(`document.querySelector("#files-table tbody").textContent.includes("stories.jsonl")`);
      assert.equal((await text(page, "#upload-error")).trim(), "");
      assert.ok(!(await text(page, "#files-table")).includes("b-private"), "tenant A sees tenant B's file");
      await page.screenshot({ path: `${shots}/files.png`, fullPage: true });

      // a job from the console; its loss curve gains points while it runs; then cancel
      await page.goto(`${url}/console/jobs`);
      await page.waitForSelector("body[data-ready=true]");
      assert.ok(
        (await page.$$eval("#job-training-file option", (os) => os.map((o) => o.textContent))).some((t) => t?.includes("stories.jsonl")),
      );
      await setValue(page, "#job-epochs", "50");
      await setValue(page, "#job-lr", "0.01");
      await setValue(page, "#job-rank", "4");
      await page.type("#job-seq", "32");
      await page.type("#job-suffix", "console");
      await Promise.all([page.waitForNavigation(), page.click("#job-form button[type=submit]")]);
      await page.waitForSelector("body[data-ready=true]");
      const points = async () => Number(await page.$eval("#loss-chart", (e) => e.getAttribute("data-points")));
      await page.waitForFunction(`Number(document.querySelector("#loss-chart").dataset.points) > 0`, { timeout: 60_000 });
      const first = await points();
      await page.waitForFunction(`Number(document.querySelector("#loss-chart").dataset.points) > ${first}`, { timeout: 30_000 });
      assert.ok(await points() > first);
      assert.ok(await page.$("#loss-plot canvas"), "the chart draws on a canvas");
      assert.match(await text(page, "#loss-latest"), /training loss \d/);
      assert.match(await text(page, "#hyperparameters"), /lora_r\s*4/);
      await page.screenshot({ path: `${shots}/job.png` });
      // a large job: 10,000 steps (validation every 100th) draw in well under a second in the same
      // chart library and browser, so the console keeps every step rather than downsampling
      const drawMs = Number(
        await page.evaluate(`new Promise((done) => {
          const x = [], train = [], valid = [];
          for (let i = 1; i <= 10000; i++) { x.push(i); train.push(3 / Math.sqrt(i)); valid.push(i % 100 ? null : 3.2 / Math.sqrt(i)); }
          const div = document.createElement("div");
          document.body.append(div);
          const t0 = performance.now();
          // uPlot draws after the call returns: time it to the end of its draw hook
          new uPlot({ width: 1200, height: 300, scales: { x: { time: false } },
            hooks: { draw: [(u) => { done(performance.now() - t0); setTimeout(() => { u.destroy(); div.remove(); }); }] },
            series: [{}, { stroke: "#2457c5" }, { stroke: "#c5246a", spanGaps: true }] }, [x, train, valid], div);
        })`),
      );
      assert.ok(drawMs < 1000, `10,000 steps took ${drawMs} ms to draw`);
      const jobId = (await page.$eval("body", (b) => b.getAttribute("data-job-id")))!;
      await page.click("#cancel-job");
      await page.waitForFunction(`/Status\\s*cancelled/.test(document.querySelector("#job-summary").textContent)`, { timeout: 30_000 });
      assert.match(await text(page, "#events"), /cancel/i);

      // models: A's adapter loads and unloads; B's adapter is not listed
      await page.goto(`${url}/console/models`);
      await page.waitForSelector("body[data-ready=true]");
      const resident = () => text(page, 'tr[data-model="a-adapter"] .resident');
      assert.equal(await resident(), "no");
      assert.ok(!(await text(page, "#models-table")).includes("b-adapter"), "tenant A sees tenant B's adapter");
      await page.click('tr[data-model="a-adapter"] button[aria-label="Load a-adapter"]');
      await page.waitForFunction(`document.querySelector('tr[data-model="a-adapter"] .resident').textContent === "yes"`);
      await page.screenshot({ path: `${shots}/models.png`, fullPage: true });
      await page.click('tr[data-model="a-adapter"] button[aria-label="Unload a-adapter"]');
      await page.waitForFunction(`document.querySelector('tr[data-model="a-adapter"] .resident').textContent === "no"`);

      // playground: the adapter beside the base, both streamed; the request as curl and SDK code
      await page.goto(`${url}/console/playground?model=a-adapter&compare=stories260K`);
      await page.waitForSelector("body[data-ready=true]");
      assert.equal(await page.$eval("#play-compare", (e) => (e as unknown as { checked: boolean }).checked), true);
      await setValue(page, "#play-temperature", "0");
      await setValue(page, "#play-max-tokens", "24");
      await setValue(page, "#play-prompt", "Tom had a ball.");
      await page.$eval("#play-form", (f) => (f as unknown as EventTarget).dispatchEvent(new Event("input")));
      assert.match(await text(page, "#snippet-curl"), /curl -N http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions/);
      assert.match(await text(page, "#snippet-sdk"), /client\.chat\.completions\.create/);
      await page.click("#play-send");
      await page.waitForFunction(`["a", "b"].every((s) => /chunks in/.test(document.querySelector("#stats-" + s).textContent))`, {
        timeout: 30_000,
      });
      const [outA, outB] = [await text(page, "#out-a"), await text(page, "#out-b")];
      const chunks = Number(/(\d+) chunks/.exec(await text(page, "#stats-a"))![1]);
      assert.ok(outA.length > 0 && outB.length > 0, "both panes answer");
      assert.ok(chunks > 1, "the answer arrives in several streamed chunks");
      assert.notEqual(outA, outB, "the adapter changes the answer");
      await page.screenshot({ path: `${shots}/playground.png`, fullPage: true });

      // server page: memory from /v1/models/{id}; /metrics is for admins
      await page.goto(`${url}/console/server`);
      await page.waitForSelector("body[data-ready=true]");
      assert.match(await text(page, "#memory"), /Total/);
      assert.match(await text(page, "#metrics-note"), /admin/);
      await page.screenshot({ path: `${shots}/server.png`, fullPage: true });

      // tenant B, in its own tab and session: none of A's objects
      const pageB = await browser.newPage();
      await pageB.goto(`${url}/console/jobs`);
      await pageB.waitForSelector("#login:not([hidden])");
      await pageB.type("#api-key", KEY_B);
      await Promise.all([pageB.waitForNavigation(), pageB.click("#login-form button[type=submit]")]);
      await pageB.waitForSelector("body[data-ready=true]");
      assert.ok(!(await text(pageB, "#jobs-table")).includes(jobId), "tenant B sees tenant A's job");
      await pageB.goto(`${url}/console/files`);
      await pageB.waitForSelector("body[data-ready=true]");
      await pageB.waitForFunction(`document.querySelector("#files-table tbody").textContent.includes("b-private")`);
      assert.ok(!(await text(pageB, "#files-table")).includes("stories.jsonl"), "tenant B sees tenant A's file");
      await pageB.goto(`${url}/console/models`);
      await pageB.waitForSelector("body[data-ready=true]");
      assert.ok(!(await text(pageB, "#models-table")).includes("a-adapter"), "tenant B sees tenant A's adapter");

      // an admin key sees every tenant's objects, and the server page's throughput from /metrics
      const admin = await browser.newPage();
      await admin.goto(`${url}/console/models`);
      await admin.waitForSelector("#login:not([hidden])");
      await admin.type("#api-key", KEY_ADMIN);
      await Promise.all([admin.waitForNavigation(), admin.click("#login-form button[type=submit]")]);
      await admin.waitForSelector("body[data-ready=true]");
      assert.match(await text(admin, "#who"), /admin/);
      const all = await text(admin, "#models-table");
      assert.ok(all.includes("a-adapter") && all.includes("b-adapter"), `the admin sees every tenant's adapters: ${all}`);
      await admin.goto(`${url}/console/jobs`);
      await admin.waitForSelector("body[data-ready=true]");
      assert.ok((await text(admin, "#jobs-table")).includes(jobId), "the admin sees tenant A's job");
      await admin.goto(`${url}/console/server`);
      await admin.waitForSelector("body[data-ready=true]");
      assert.match(await text(admin, "#metrics"), /Mean batch size/);

      // /docs with the network cut: every request not to this server is refused
      const docs = await browser.newPage();
      const refused: string[] = [];
      await docs.setRequestInterception(true);
      docs.on("request", (r) => {
        const host = new URL(r.url()).hostname;
        if (r.url().startsWith("data:") || host === "127.0.0.1" || host === "localhost") return r.continue();
        refused.push(r.url());
        return r.abort();
      });
      await docs.goto(`${url}/docs`);
      await docs.waitForFunction(`/qlora server/.test(document.body.innerText)`, { timeout: 60_000 });
      // Scalar renders operations as they scroll into view: the first one is enough
      await docs.waitForFunction(`/POST\\s*\\/v1\\/completions/.test(document.body.innerText)`, { timeout: 60_000 });
      await docs.screenshot({ path: `${shots}/docs.png` });

      assert.deepEqual(refused, [], "/docs asked for something beyond this server");
      assert.deepEqual(pageErrors, [], "the console's pages threw");
      console.log(
        `console: screenshots in ${shots}; 10,000 steps drawn in ${drawMs.toFixed(0)} ms; ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
      );
    } finally {
      await browser?.close();
      await shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
});
