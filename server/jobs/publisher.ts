// publisher.ts — making fine-tuned models servable. The runner publishes each checkpoint and the
// final adapter as models of the job's tenant; in the server that is the adapter registry of the
// HTTP thread (the worker's runner asks for it over an RPC).
import type { Caller } from "../util/caller.ts";

/** Makes fine-tuned models servable. */
export interface ModelPublisher {
  publish(tenant: string, id: string, dir: string): Promise<void>;
  unpublish?(tenant: string, id: string): Promise<void>;
}

/** A ModelPublisher over the adapter registry (server/adapters/registry.ts): the model is
 * registered for the job's tenant. The checkpoint folder must lie under the registry's adapter
 * root (make checkpointDir a folder inside it). */
export function registryPublisher(registry: {
  register(caller: Caller, id: string, path: string): Promise<unknown>;
  remove(caller: Caller, id: string): Promise<unknown>;
  get(caller: Caller, id: string): unknown;
}): ModelPublisher {
  return {
    async publish(tenant, id, dir) {
      if (registry.get({ tenant, admin: false }, id)) return; // already registered (a restart of the runner)
      await registry.register({ tenant, admin: true }, id, dir);
    },
    async unpublish(tenant, id) {
      await registry.remove({ tenant, admin: false }, id);
    },
  };
}
