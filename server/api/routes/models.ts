// models.ts — GET /v1/models (the base model and every adapter the caller may use, with vLLM's
// root/parent), GET /v1/models/{id} (adds the memory report or the adapter's shape).
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ModelDetailSchema, ModelListSchema } from "../schemas/models.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { ClientError } from "../../util/errors.ts";
import type { AdapterRecord } from "../../adapters/registry.ts";
import { deleteAdapter, errorContent } from "./shared.ts";

const listRoute = createRoute({
  method: "get",
  path: "/v1/models",
  tags: ["Models"],
  summary: "Lists the base model and the adapters the caller may use.",
  responses: {
    200: { description: "The models", content: { "application/json": { schema: ModelListSchema } } },
    401: errorContent("Missing or wrong API key"),
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/v1/models/{id}",
  tags: ["Models"],
  summary: "One model: the base model with its memory report, or an adapter.",
  request: { params: z.object({ id: z.string().openapi({ param: { name: "id", in: "path" }, example: "tiny" }) }) },
  responses: {
    200: { description: "The model", content: { "application/json": { schema: ModelDetailSchema } } },
    401: errorContent("Missing or wrong API key"),
    404: errorContent("No such model"),
  },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/v1/models/{id}",
  tags: ["Models"],
  summary: "Deletes one of the caller's fine-tuned models or adapters (OpenAI's shape); it stays deleted after a restart.",
  request: { params: z.object({ id: z.string().openapi({ param: { name: "id", in: "path" }, example: "ft:tiny:demo:ftjob-abc" }) }) },
  responses: {
    200: {
      description: "Deleted",
      content: {
        "application/json": {
          schema: z.object({ id: z.string(), object: z.literal("model"), deleted: z.literal(true) }).openapi("ModelDeleted"),
        },
      },
    },
    401: errorContent("Missing or wrong API key"),
    403: errorContent("The base model cannot be deleted"),
    404: errorContent("No such model"),
  },
});

export function registerModels(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const base = () => ({
    id: deps.host.info.id,
    object: "model" as const,
    created: deps.created,
    owned_by: "qlora",
    root: deps.host.info.id,
    parent: null,
    max_model_len: deps.host.info.maxModelLen,
  });
  const adapterCard = (a: AdapterRecord) => ({
    id: a.id,
    object: "model" as const,
    created: a.created,
    owned_by: a.tenant,
    root: deps.registry.displayPath(a) ?? a.id,
    parent: deps.host.info.id,
    max_model_len: deps.host.info.maxModelLen,
  });
  app.openapi(listRoute, (c) => {
    const who = c.get("principal");
    return c.json({ object: "list" as const, data: [base(), ...deps.registry.list(who).map(adapterCard)] }, 200);
  });
  app.openapi(getRoute, (c) => {
    const { id } = c.req.valid("param");
    const info = deps.host.info;
    if (id === info.id) {
      return c.json({
        ...base(),
        quantization: info.quant,
        backend: info.backend,
        memory: { ...info.memory, resident_adapter_bytes: deps.host.stats.residentBytes },
      }, 200);
    }
    const a = deps.registry.get(c.get("principal"), id);
    if (!a) throw new ClientError(404, `The model \`${id}\` does not exist.`, "model_not_found", "id");
    return c.json({
      ...adapterCard(a),
      adapter: { r: a.r, lora_alpha: a.loraAlpha, target_modules: a.targetModules, device_bytes: a.deviceBytes },
    }, 200);
  });
  app.openapi(deleteRoute, async (c) => {
    const { id } = c.req.valid("param");
    if (id === deps.host.info.id) throw new ClientError(403, "the base model cannot be deleted", "permission_denied", "id");
    const rec = await deleteAdapter(deps, c.get("principal"), id);
    return c.json({ id: rec.id, object: "model" as const, deleted: true as const }, 200);
  });
}
