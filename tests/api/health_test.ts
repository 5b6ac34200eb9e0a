// health_test.ts — GET /health answers with the native backend the server loaded.
import assert from "node:assert/strict";
import { createApp } from "../../server/api/app.ts";
import { Context } from "../../server/ffi/tensor.ts";

Deno.test("GET /health reports the loaded backend; unknown routes answer 404 in OpenAI's error shape", async () => {
  using ctx = new Context({ backend: "cpu", threads: 1 });
  const app = createApp({ backend: ctx.backend, backendInfo: ctx.describe() });
  const res = await app.request("/health");
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, "ok");
  assert.equal(body.backend, "cpu");
  assert.equal(body.native.threads, 1);
  const missing = await app.request("/nope");
  assert.equal(missing.status, 404);
  const err = await missing.json();
  assert.equal(err.error.type, "invalid_request_error");
  assert.match(err.error.message, /no route/);
});
