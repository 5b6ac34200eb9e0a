// tokenize.ts — vLLM's POST /tokenize (a prompt, or chat messages through the chat template) and
// POST /detokenize, and GET /version. `model` is the base model or one of the caller's adapters
// (another tenant's adapter is a 404, as everywhere); adapters share the base model's tokenizer.
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { AppDeps, AppEnv } from "../deps.ts";
import {
  DetokenizeRequestSchema,
  DetokenizeResponseSchema,
  TokenizeRequestSchema,
  TokenizeResponseSchema,
  VersionSchema,
} from "../schemas/tokenize.ts";
import { chatPromptIds, checkTokenIds, resolveModel, textPromptIds } from "../generation.ts";
import { errorContent } from "./shared.ts";

/** The server's version (GET /version and the OpenAPI document's info.version). */
export const SERVER_VERSION = "1.0.0";

const ERRORS = {
  400: errorContent("Invalid request"),
  401: errorContent("Missing or wrong API key"),
  404: errorContent("Unknown model"),
};

const routes = {
  tokenize: createRoute({
    method: "post",
    path: "/tokenize",
    tags: ["Tokenizer"],
    summary: "Tokenizes a prompt, or chat messages through the chat template (vLLM's /tokenize).",
    request: { body: { required: true, content: { "application/json": { schema: TokenizeRequestSchema } } } },
    responses: { 200: { description: "The tokens", content: { "application/json": { schema: TokenizeResponseSchema } } }, ...ERRORS },
  }),
  detokenize: createRoute({
    method: "post",
    path: "/detokenize",
    tags: ["Tokenizer"],
    summary: "Turns token ids back into text (vLLM's /detokenize).",
    request: { body: { required: true, content: { "application/json": { schema: DetokenizeRequestSchema } } } },
    responses: { 200: { description: "The text", content: { "application/json": { schema: DetokenizeResponseSchema } } }, ...ERRORS },
  }),
  version: createRoute({
    method: "get",
    path: "/version",
    tags: ["Server"],
    summary: "The server's version.",
    security: [],
    responses: { 200: { description: "The version", content: { "application/json": { schema: VersionSchema } } } },
  }),
};

export function registerTokenize(app: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  app.openapi(routes.tokenize, async (c) => {
    const body = c.req.valid("json");
    const who = c.get("principal"), signal = c.req.raw.signal;
    if (body.model !== undefined) resolveModel(deps, who, body.model);
    const tokens = "messages" in body
      ? await chatPromptIds(deps, who.tenant, body.messages, {
        addGenerationPrompt: body.add_generation_prompt,
        addSpecialTokens: body.add_special_tokens,
        signal,
      })
      : await textPromptIds(deps, who.tenant, body.prompt, body.add_special_tokens ?? true, signal);
    return c.json({
      count: tokens.length,
      max_model_len: deps.host.info.maxModelLen,
      tokens,
      token_strs: body.return_token_strs ? tokens.map((id) => deps.tokenizer.idToToken(id) ?? "") : null,
    }, 200);
  });
  app.openapi(routes.detokenize, (c) => {
    const body = c.req.valid("json");
    if (body.model !== undefined) resolveModel(deps, c.get("principal"), body.model);
    checkTokenIds(deps, body.tokens, "tokens");
    return c.json({ prompt: deps.tokenizer.decode(body.tokens, { skipSpecialTokens: false }) }, 200);
  });
  app.openapi(routes.version, (c) => c.json({ version: SERVER_VERSION }, 200));
}
