// memory.ts — POST /v1/memory/plan: what a serving or training workload takes in memory on the
// served base model or on a named shape, before running it (serving/memory_plan.ts).
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { AppDeps, AppEnv } from "../deps.ts";
import { MemoryPlanRequestSchema, MemoryPlanSchema } from "../schemas/memory.ts";
import { planMemory, type PlanModel, shapePlanModel } from "../../serving/memory_plan.ts";
import { ClientError } from "../../util/errors.ts";
import { errorContent } from "./shared.ts";

const route = createRoute({
  method: "post",
  path: "/v1/memory/plan",
  tags: ["Models"],
  summary: "Plans the memory of a serving or LoRA training workload (weights, KV cache, adapters, optimizer, activations).",
  request: { body: { required: true, content: { "application/json": { schema: MemoryPlanRequestSchema } } } },
  responses: {
    200: { description: "The plan", content: { "application/json": { schema: MemoryPlanSchema } } },
    400: errorContent("Invalid request"),
    401: errorContent("Missing or wrong API key"),
    404: errorContent("Unknown model or shape"),
  },
});

export function registerMemory(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  app.openapi(route, (c) => {
    const body = c.req.valid("json");
    const info = deps.host.info;
    const name = body.model ?? info.id;
    let model: PlanModel | null;
    if (name === info.id) model = info.planModel;
    else {
      model = shapePlanModel(name);
      if (!model) {
        throw new ClientError(404, `\`${name}\` is neither the served model (${info.id}) nor a named shape`, "model_not_found", "model");
      }
    }
    const quant = body.quant ?? (name === info.id ? info.quant as "nf4" : "nf4");
    const plan = planMemory(model, {
      quant,
      blocksize: body.blocksize,
      doubleQuant: body.double_quant,
      serving: body.training ? undefined : {
        kvTokens: body.kv_tokens ?? 0,
        kvBytes: body.kv_dtype === undefined ? undefined : body.kv_dtype === "bf16" ? 2 : 4,
        adapters: body.adapters ? { count: body.adapters.count, r: body.adapters.r, modules: body.adapters.target_modules } : undefined,
      },
      training: body.training
        ? {
          r: body.training.r,
          modules: body.training.target_modules,
          tokensPerStep: body.training.tokens_per_step,
          gradientCheckpointing: body.training.gradient_checkpointing,
          activationBytes: body.training.activations === undefined ? undefined : body.training.activations === "bf16" ? 2 : 4,
          optimizerBudgetBytes: body.training.optimizer_budget_bytes,
        }
        : undefined,
      budgetBytes: body.budget_bytes,
    });
    return c.json({ model: name, ...plan }, 200);
  });
}
