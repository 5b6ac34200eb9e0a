// shared.ts — what the route modules share (routes never import one another).
import { ErrorSchema } from "../schemas/common.ts";
import type { AppDeps } from "../deps.ts";
import type { AdapterRecord } from "../../adapters/registry.ts";
import type { Caller } from "../../util/caller.ts";

/** Deletes a caller's adapter or fine-tuned model: unregistered, unloaded once its last request
 * ends, and — when a job made it — remembered as deleted, so that a restart does not bring it back. */
export async function deleteAdapter(deps: AppDeps, who: Caller, id: string): Promise<AdapterRecord> {
  const rec = await deps.registry.remove(who, id);
  await deps.host.unloadAdapter(rec.uid);
  deps.jobs?.forgetModel({ tenant: rec.tenant, admin: false }, rec.id);
  return rec;
}

/** An error response of a route's OpenAPI description (OpenAI's error shape). */
export const errorContent = (description: string) => ({ description, content: { "application/json": { schema: ErrorSchema } } });

/** The error responses of the generation routes (chat, completions). */
export const GENERATION_ERRORS = {
  400: errorContent("Invalid request"),
  401: errorContent("Missing or wrong API key"),
  404: errorContent("Unknown model"),
  429: errorContent("Queue full"),
};
