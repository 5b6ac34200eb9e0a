// app.ts — the Hono application: request ids and structured logs, body limit, auth, error
// handling (every error, including schema violations, answers through errors.ts), the routes, the
// OpenAPI 3.1 document (/openapi.json), the API reference (/docs), /health, /metrics and the web
// console (console/: pages at / and /console/…, a client of this same API).
import { registerMemory } from "./routes/memory.ts";
import { OpenAPIHono } from "@hono/zod-openapi";
import { checkFileQuota, checkJobQuota } from "./quotas.ts";
import { bodyLimit } from "hono/body-limit";
import { Scalar } from "@scalar/hono-api-reference";
import type { AppDeps, AppEnv } from "./deps.ts";
import { errorResponse, openAiError, validationHook } from "./errors.ts";
import { ClientError } from "../util/errors.ts";
import { authMiddleware } from "./auth.ts";
import { registerCompletions } from "./routes/completions.ts";
import { registerChat } from "./routes/chat.ts";
import { registerResponses } from "./routes/responses.ts";
import { registerModels } from "./routes/models.ts";
import { registerAdapters } from "./routes/adapters.ts";
import { registerFilesRoutes } from "./routes/files.ts";
import { registerFineTuningRoutes } from "./routes/fine_tuning.ts";
import { registerTokenize, SERVER_VERSION } from "./routes/tokenize.ts";
import { registerConsole } from "./console/routes.ts";

export type { AppDeps } from "./deps.ts";

const REQUEST_ID_RE = /^[A-Za-z0-9._:\-]{1,128}$/;

/** The methods the request counter names; any other is counted as "other". */
const HTTP_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

export function createApp(deps: AppDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

  // request id + one structured log line per request + request counter
  app.use("*", async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && REQUEST_ID_RE.test(incoming) ? incoming : crypto.randomUUID();
    c.set("requestId", requestId);
    const t0 = performance.now();
    await next();
    c.header("x-request-id", requestId);
    const route = c.req.routePath && c.req.routePath !== "*" && c.req.routePath !== "/*" ? c.req.routePath : "unmatched";
    // label values from fixed sets only, so that no request can create new series
    const method = HTTP_METHODS.has(c.req.method) ? c.req.method : "other";
    if (route !== "/metrics") deps.metrics.requests.inc({ method, route, status: String(c.res.status) });
    deps.log?.({
      ts: new Date().toISOString(),
      level: c.res.status >= 500 ? "error" : "info",
      msg: "request",
      request_id: requestId,
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round((performance.now() - t0) * 10) / 10,
      tenant: c.var.principal?.tenant ?? null,
      ...(c.var.recorded ? { caller: c.var.recorded } : {}),
    });
  });

  // vLLM's /tokenize and /detokenize sit outside /v1 and are served per tenant like it
  // per-route body limits: uploads may be large; a JSON body beyond a few MB is refused while it is
  // still arriving (by its content-length, or once that many bytes came), before any parsing
  const limit = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: (c) => errorResponse(c, new ClientError(413, `the request body is larger than ${maxSize} bytes`, "request_too_large")),
    });
  const uploadLimit = limit(deps.uploadLimitBytes), jsonLimit = limit(deps.bodyLimitBytes);
  const UPLOADS = new Set(["/v1/files", "/v1/adapters/upload"]);
  for (const path of ["/v1/*", "/tokenize", "/detokenize"]) {
    app.use(path, (c, next) => (UPLOADS.has(c.req.path) ? uploadLimit : jsonLimit)(c, next));
    app.use(path, authMiddleware(deps.keys));
  }

  app.get("/health", (c) =>
    c.json({
      status: "ok",
      backend: deps.host.info.backend,
      native: deps.host.info.backendInfo,
      model: deps.host.info.id,
      running: deps.host.stats.running,
      waiting: deps.host.stats.waiting,
    }));
  // /metrics names every tenant's adapters (vllm:lora_requests_info): the admin's, like the
  // operator's scraper (with no keys configured, every local caller is the admin)
  app.use("/metrics", authMiddleware(deps.keys));
  app.get("/metrics", (c) => {
    if (!c.var.principal.admin) throw new ClientError(403, "/metrics needs an admin key", "permission_denied");
    return c.text(deps.metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  registerCompletions(app, deps);
  registerChat(app, deps);
  registerResponses(app, deps);
  registerModels(app, deps);
  registerAdapters(app, deps);
  registerTokenize(app, deps);
  registerMemory(app, deps);
  if (deps.files) registerFilesRoutes(app, { files: deps.files, checkQuota: (who, bytes) => checkFileQuota(deps, who, bytes) });
  if (deps.jobs) registerFineTuningRoutes(app, { jobs: deps.jobs, checkQuota: (who) => checkJobQuota(deps, who) });

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer" });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "qlora server",
      version: SERVER_VERSION,
      description: "OpenAI-compatible completions and chat over a 4-bit base model, with per-request LoRA adapters for many tenants.",
    },
    security: [{ bearer: [] }],
  });
  // the reference's script is served by this server (console/assets.ts), not a CDN, and its default
  // fonts (fonts.scalar.com) are off: /docs makes no request beyond this server, so it works offline
  app.get(
    "/docs",
    Scalar({ url: "/openapi.json", pageTitle: "qlora server API", cdn: "/console/assets/scalar.js", withDefaultFonts: false }),
  );
  registerConsole(app, { needsLogin: () => deps.keys.size > 0 });

  app.notFound((c) => errorResponse(c, new ClientError(404, `no route for ${c.req.method} ${c.req.path}`, "not_found")));
  app.onError((err, c) => {
    const { status } = openAiError(err);
    if (status >= 500) {
      deps.log?.({
        ts: new Date().toISOString(),
        level: "error",
        msg: "unhandled error",
        request_id: c.var.requestId,
        error: String((err as Error)?.stack ?? err),
      });
    }
    return errorResponse(c, err);
  });
  return app;
}
