// adapters.ts — client.adapters: the /adapters resource. An adapter is used by naming it as a
// request's `model`; create registers a PEFT folder under the server's adapter root, upload sends
// adapter_config.json + adapter_model.safetensors.
import { type APIPromise, type RequestOptions, seg } from "../core.ts";
import { Page, type PagePromise } from "../pagination.ts";
import { APIResource } from "../resource.ts";
import { appendFile } from "../uploads.ts";
import type {
  Adapter,
  AdapterCreateParams,
  AdapterDeleted,
  AdapterUploadParams,
  LoadLoraAdapterParams,
  UnloadLoraAdapterParams,
} from "../types.ts";

export class Adapters extends APIResource {
  /** Registers a PEFT adapter folder (a path relative to the server's adapter root). */
  create(
    body: AdapterCreateParams,
    options?: RequestOptions,
  ): APIPromise<Adapter> {
    return this._client.post("/adapters", { ...options, body });
  }

  /** Uploads a PEFT adapter's two files. */
  upload(
    params: AdapterUploadParams,
    options?: RequestOptions,
  ): APIPromise<Adapter> {
    const form = new FormData();
    form.append("id", params.id);
    const cfg = params.adapter_config;
    const cfgBody = typeof cfg === "object" && !(cfg instanceof Blob) &&
        !ArrayBuffer.isView(cfg) && !(cfg instanceof ArrayBuffer)
      ? JSON.stringify(cfg)
      : cfg;
    appendFile(
      form,
      "adapter_config",
      cfgBody,
      "adapter_config.json",
      "application/json",
    );
    appendFile(
      form,
      "adapter_model",
      params.adapter_model,
      "adapter_model.safetensors",
    );
    if (params.tenant !== undefined) form.append("tenant", params.tenant);
    return this._client.post("/adapters/upload", { ...options, body: form });
  }

  /** The caller's adapters (an admin sees every tenant's). */
  list(options?: RequestOptions): PagePromise<Page<Adapter>, Adapter> {
    return this._client.getAPIList<Page<Adapter>, Adapter>(
      "/adapters",
      Page,
      {},
      options,
    );
  }

  retrieve(id: string, options?: RequestOptions): APIPromise<Adapter> {
    return this._client.get(`/adapters/${seg(id)}`, options);
  }

  /** vLLM's POST /load_lora_adapter: registers `lora_path` (under the adapter root) as `lora_name` and loads it; resolves to the server's message. */
  load(body: LoadLoraAdapterParams, options?: RequestOptions): APIPromise<string> {
    return this._client.post("/load_lora_adapter", {
      ...options,
      body,
      text: true,
      headers: { accept: "text/plain", ...(options?.headers ?? {}) },
    });
  }

  /** vLLM's POST /unload_lora_adapter (running requests finish first); resolves to the server's message. */
  unload(body: UnloadLoraAdapterParams, options?: RequestOptions): APIPromise<string> {
    return this._client.post("/unload_lora_adapter", {
      ...options,
      body,
      text: true,
      headers: { accept: "text/plain", ...(options?.headers ?? {}) },
    });
  }

  /** Makes a registered adapter resident on the device now, instead of on its first request. */
  makeResident(id: string, options?: RequestOptions): APIPromise<Adapter> {
    return this._client.post(`/adapters/${seg(id)}/load`, options);
  }

  /** Frees a registered adapter from the device once running requests finish; it stays registered and reloads on demand. */
  evict(id: string, options?: RequestOptions): APIPromise<Adapter> {
    return this._client.post(`/adapters/${seg(id)}/unload`, options);
  }

  /** Unregisters an adapter; requests already using it finish first. */
  delete(id: string, options?: RequestOptions): APIPromise<AdapterDeleted> {
    return this._client.delete(`/adapters/${seg(id)}`, options);
  }
}
