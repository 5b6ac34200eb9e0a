// routes.ts — the console's routes: its pages (/ and /console/…) and its assets
// (/console/assets/…). Pages need no key: they hold no data, and the script asks the API with the
// key the user signs in with (or none, on a server without keys).
import type { Hono } from "hono";
import { renderPage } from "./pages.tsx";
import { readAsset } from "./assets.ts";

const PAGES = ["jobs", "files", "models", "playground", "server"] as const;
/** Job ids are ours (ftjob-…); anything else is not a job page. */
const JOB_ID_RE = /^[A-Za-z0-9_\-]{1,128}$/;

// deno-lint-ignore no-explicit-any
export function registerConsole(app: Hono<any>, opts: { needsLogin: () => boolean }): void {
  const html = (body: string) =>
    new Response(body, {
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    });
  app.get("/", () => html(renderPage("jobs", { needsLogin: opts.needsLogin() })));
  app.get("/console", (c) => c.redirect("/console/jobs"));
  app.get("/console/", (c) => c.redirect("/console/jobs"));
  for (const page of PAGES) app.get(`/console/${page}`, () => html(renderPage(page, { needsLogin: opts.needsLogin() })));
  app.get("/console/jobs/:id", (c) => {
    const id = c.req.param("id");
    if (!JOB_ID_RE.test(id)) return c.notFound();
    return html(renderPage("job", { needsLogin: opts.needsLogin(), jobId: id }));
  });
  app.get("/console/assets/:name", async (c) => {
    const asset = await readAsset(c.req.param("name"));
    if (!asset) return c.notFound();
    return c.body(asset.bytes, 200, { "content-type": asset.type, "cache-control": "public, max-age=3600" });
  });
}
