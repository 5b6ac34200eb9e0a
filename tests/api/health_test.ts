// health_test.ts — GET /health answers at once with the backend the engine worker loaded, and
// unknown routes answer 404 in OpenAI's error shape.
import assert from "node:assert/strict";
import { storiesServer } from "../helpers.ts";

Deno.test("GET /health reports the loaded backend and model; unknown routes answer 404 in OpenAI's error shape", async () => {
  const root = await Deno.makeTempDir({ prefix: "qlora-health-" });
  const s = await storiesServer(root);
  try {
    const res = await s.app.request("/health");
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.status, "ok");
    assert.equal(body.backend, s.deps.host.info.backend);
    assert.equal(body.native.threads, 1);
    assert.equal(body.model, "stories260K");
    const missing = await s.app.request("/nope");
    assert.equal(missing.status, 404);
    const err = await missing.json();
    assert.equal(err.error.type, "invalid_request_error");
    assert.match(err.error.message, /no route/);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
});
