// adapters.ts — the /v1/adapters resource (register from a folder under the adapter root,
// upload, list, get, delete) and vLLM's POST /v1/load_lora_adapter, /v1/unload_lora_adapter.
// Deleting or unloading an adapter that running requests use lets them finish.
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import {
  AdapterListSchema,
  AdapterSchema,
  CreateAdapterSchema,
  DeletedSchema,
  LoadLoraSchema,
  UnloadLoraSchema,
  UploadAdapterSchema,
} from "../schemas/adapters.ts";
import { deleteAdapter, errorContent as err } from "./shared.ts";
import type { AppDeps, AppEnv } from "../deps.ts";
import { checkAdapterQuota } from "../quotas.ts";
import type { AdapterRecord } from "../../adapters/registry.ts";
import { type Caller, TENANT_RE, TENANT_RULE } from "../../util/caller.ts";
import { ClientError } from "../../util/errors.ts";

const IdParam = z.object({ id: z.string().openapi({ param: { name: "id", in: "path" }, example: "my-adapter" }) });

const routes = {
  list: createRoute({
    method: "get",
    path: "/v1/adapters",
    tags: ["Adapters"],
    summary: "Lists the caller's adapters (an admin sees every tenant's).",
    responses: {
      200: { description: "Adapters", content: { "application/json": { schema: AdapterListSchema } } },
      401: err("Missing or wrong API key"),
    },
  }),
  create: createRoute({
    method: "post",
    path: "/v1/adapters",
    tags: ["Adapters"],
    summary: "Registers a PEFT adapter folder that lies under the server's adapter root.",
    request: { body: { required: true, content: { "application/json": { schema: CreateAdapterSchema } } } },
    responses: {
      201: { description: "Registered", content: { "application/json": { schema: AdapterSchema } } },
      400: err("Invalid adapter or path"),
      401: err("Missing or wrong API key"),
      409: err("The id is taken"),
    },
  }),
  upload: createRoute({
    method: "post",
    path: "/v1/adapters/upload",
    tags: ["Adapters"],
    summary: "Uploads a PEFT adapter (multipart: id, adapter_config, adapter_model).",
    request: { body: { required: true, content: { "multipart/form-data": { schema: UploadAdapterSchema } } } },
    responses: {
      201: { description: "Registered", content: { "application/json": { schema: AdapterSchema } } },
      400: err("Invalid adapter"),
      401: err("Missing or wrong API key"),
      409: err("The id is taken"),
    },
  }),
  get: createRoute({
    method: "get",
    path: "/v1/adapters/{id}",
    tags: ["Adapters"],
    summary: "One adapter.",
    request: { params: IdParam },
    responses: {
      200: { description: "The adapter", content: { "application/json": { schema: AdapterSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such adapter"),
    },
  }),
  delete: createRoute({
    method: "delete",
    path: "/v1/adapters/{id}",
    tags: ["Adapters"],
    summary: "Unregisters an adapter and frees it from the device once running requests finish.",
    request: { params: IdParam },
    responses: {
      200: { description: "Deleted", content: { "application/json": { schema: DeletedSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such adapter"),
    },
  }),
  loadResident: createRoute({
    method: "post",
    path: "/v1/adapters/{id}/load",
    tags: ["Adapters"],
    summary: "Makes a registered adapter resident on the device now (instead of on its first request).",
    request: { params: IdParam },
    responses: {
      200: { description: "The adapter, resident", content: { "application/json": { schema: AdapterSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such adapter"),
    },
  }),
  unloadResident: createRoute({
    method: "post",
    path: "/v1/adapters/{id}/unload",
    tags: ["Adapters"],
    summary: "Frees a registered adapter from the device (once running requests finish); it stays registered and reloads on demand.",
    request: { params: IdParam },
    responses: {
      200: { description: "The adapter", content: { "application/json": { schema: AdapterSchema } } },
      401: err("Missing or wrong API key"),
      404: err("No such adapter"),
    },
  }),
  load: createRoute({
    method: "post",
    path: "/v1/load_lora_adapter",
    tags: ["Adapters"],
    summary: "vLLM's dynamic LoRA loading: registers lora_path (under the adapter root) as lora_name and loads it.",
    request: { body: { required: true, content: { "application/json": { schema: LoadLoraSchema } } } },
    responses: {
      200: { description: "Loaded", content: { "text/plain": { schema: z.string() } } },
      400: err("Invalid adapter or path"),
      401: err("Missing or wrong API key"),
      409: err("The name is taken"),
    },
  }),
  unload: createRoute({
    method: "post",
    path: "/v1/unload_lora_adapter",
    tags: ["Adapters"],
    summary: "vLLM's dynamic LoRA unloading (running requests finish first).",
    request: { body: { required: true, content: { "application/json": { schema: UnloadLoraSchema } } } },
    responses: {
      200: { description: "Unloaded", content: { "text/plain": { schema: z.string() } } },
      401: err("Missing or wrong API key"),
      404: err("No such adapter"),
    },
  }),
};

/** Whom a registration is for: the caller, or (admins only) the named tenant. */
function owner(who: Caller, tenant: string | undefined): Caller {
  if (tenant === undefined || tenant === who.tenant) return who;
  if (!who.admin) throw new ClientError(403, "only an admin key may register adapters for another tenant", "forbidden", "tenant");
  if (!TENANT_RE.test(tenant)) throw new ClientError(400, `tenant: ${TENANT_RULE}`, "invalid_value", "tenant");
  return { tenant, admin: true };
}

export function registerAdapters(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const show = (a: AdapterRecord) => ({
    id: a.id,
    object: "adapter" as const,
    created: a.created,
    owner: a.tenant,
    base_model: deps.host.info.id,
    source: a.source,
    path: deps.registry.displayPath(a),
    r: a.r,
    lora_alpha: a.loraAlpha,
    use_rslora: a.useRslora,
    target_modules: a.targetModules,
    device_bytes: a.deviceBytes,
    resident: deps.host.stats.residentUids.includes(a.uid),
  });
  const preload = async (who: Caller, a: AdapterRecord) => {
    try {
      await deps.host.loadAdapter(a.uid, a.dir);
    } catch (e) {
      await deps.registry.remove(who, a.id).catch(() => {});
      throw e;
    }
  };
  const remove = (who: Caller, id: string) => deleteAdapter(deps, who, id);

  app.openapi(routes.list, (c) => c.json({ object: "list" as const, data: deps.registry.list(c.get("principal")).map(show) }, 200));

  app.openapi(routes.create, async (c) => {
    const body = c.req.valid("json");
    const who = owner(c.get("principal"), body.tenant);
    checkAdapterQuota(deps, who);
    const rec = await deps.registry.register(who, body.id, body.path, (b) => checkAdapterQuota(deps, who, b));
    if (body.preload) await preload(who, rec);
    return c.json(show(rec), 201);
  });

  app.openapi(routes.upload, async (c) => {
    const form = c.req.valid("form") as Record<string, unknown>;
    const who = owner(c.get("principal"), typeof form.tenant === "string" ? form.tenant : undefined);
    const bytes = async (v: unknown, name: string): Promise<Uint8Array> => {
      if (v instanceof Blob) return new Uint8Array(await v.arrayBuffer());
      if (typeof v === "string") return new TextEncoder().encode(v);
      throw new ClientError(400, `${name} is required (a file)`, "invalid_value", name);
    };
    checkAdapterQuota(deps, who);
    const rec = await deps.registry.upload(
      who,
      String(form.id),
      await bytes(form.adapter_config, "adapter_config"),
      await bytes(form.adapter_model, "adapter_model"),
      (b) => checkAdapterQuota(deps, who, b),
    );
    return c.json(show(rec), 201);
  });

  const found = (who: Caller, id: string): AdapterRecord => {
    const rec = deps.registry.get(who, id);
    if (!rec) throw new ClientError(404, `adapter "${id}" does not exist`, "adapter_not_found", "id");
    return rec;
  };

  app.openapi(routes.get, (c) => c.json(show(found(c.get("principal"), c.req.valid("param").id)), 200));

  app.openapi(routes.loadResident, async (c) => {
    const rec = found(c.get("principal"), c.req.valid("param").id);
    await deps.host.loadAdapter(rec.uid, rec.dir);
    return c.json(show(rec), 200);
  });

  app.openapi(routes.unloadResident, async (c) => {
    const rec = found(c.get("principal"), c.req.valid("param").id);
    await deps.host.unloadAdapter(rec.uid);
    return c.json(show(rec), 200);
  });

  app.openapi(routes.delete, async (c) => {
    const { id } = c.req.valid("param");
    const rec = await remove(c.get("principal"), id);
    return c.json({ id: rec.id, object: "adapter" as const, deleted: true }, 200);
  });

  app.openapi(routes.load, async (c) => {
    const body = c.req.valid("json");
    const who = c.get("principal");
    checkAdapterQuota(deps, who);
    const rec = await deps.registry.register(who, body.lora_name, body.lora_path, (b) => checkAdapterQuota(deps, who, b));
    await preload(who, rec);
    return c.text(`Success: LoRA adapter '${body.lora_name}' added successfully.`, 200);
  });

  app.openapi(routes.unload, async (c) => {
    const body = c.req.valid("json");
    await remove(c.get("principal"), body.lora_name);
    return c.text(`Success: LoRA adapter '${body.lora_name}' removed successfully.`, 200);
  });
}
