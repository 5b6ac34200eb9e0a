// app.ts — the Hono application: middleware, the error hook, and the routes.
import { OpenAPIHono } from "@hono/zod-openapi";

export interface AppInfo {
  backend: string;
  backendInfo: Record<string, unknown>;
  model?: string;
}

export function createApp(info: AppInfo): OpenAPIHono {
  const app = new OpenAPIHono();
  app.get("/health", (c) => c.json({ status: "ok", backend: info.backend, native: info.backendInfo, model: info.model ?? null }));
  app.notFound((c) => c.json({ error: { message: `no route for ${c.req.method} ${c.req.path}`, type: "invalid_request_error", param: null, code: "not_found" } }, 404));
  app.onError((err, c) => {
    console.error(err);
    return c.json({ error: { message: "internal server error", type: "server_error", param: null, code: null } }, 500);
  });
  return app;
}
