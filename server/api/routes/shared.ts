// shared.ts — what the route modules share (routes never import one another).
import { ErrorSchema } from "../schemas/common.ts";

/** An error response of a route's OpenAPI description (OpenAI's error shape). */
export const errorContent = (description: string) => ({ description, content: { "application/json": { schema: ErrorSchema } } });

/** The error responses of the generation routes (chat, completions). */
export const GENERATION_ERRORS = {
  400: errorContent("Invalid request"),
  401: errorContent("Missing or wrong API key"),
  404: errorContent("Unknown model"),
  429: errorContent("Queue full"),
};
