// models.ts — client.models: GET /models (the base model and the adapters the caller may use,
// with vLLM's root/parent), GET /models/{id} (adds the memory report or the adapter's shape) and
// DELETE /models/{id} (a fine-tuned model or adapter of the caller's), POST /memory/plan.
import { type APIPromise, type RequestOptions, seg } from "../core.ts";
import { Page, type PagePromise } from "../pagination.ts";
import { APIResource } from "../resource.ts";
import type { MemoryPlan, MemoryPlanParams, Model, ModelDeleted, ModelDetail } from "../types.ts";

export class Models extends APIResource {
  /** Every model the caller may use (one page; `for await` works too). */
  list(options?: RequestOptions): PagePromise<Page<Model>, Model> {
    return this._client.getAPIList<Page<Model>, Model>(
      "/models",
      Page,
      {},
      options,
    );
  }

  /** One model: the base model with its memory report, or an adapter. */
  retrieve(id: string, options?: RequestOptions): APIPromise<ModelDetail> {
    return this._client.get(`/models/${seg(id)}`, options);
  }

  /** The memory a serving or LoRA training workload takes on the served model or a named shape
   * (llama-7b, …), and whether it fits `budget_bytes` (POST /memory/plan). */
  planMemory(body: MemoryPlanParams, options?: RequestOptions): APIPromise<MemoryPlan> {
    return this._client.post("/memory/plan", { ...options, body });
  }

  /** Deletes one of the caller's fine-tuned models or adapters; it stays deleted after a restart. */
  delete(id: string, options?: RequestOptions): APIPromise<ModelDeleted> {
    return this._client.delete(`/models/${seg(id)}`, options);
  }
}
