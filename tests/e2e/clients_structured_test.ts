// clients_structured_test.ts — structured outputs and tool calls through third-party clients, over
// real HTTP on the default model (stories260K with its chat template from models/): the Vercel AI
// SDK's generateObject with a zod schema and a forced tool call, through @ai-sdk/openai-compatible
// (chat: response_format json_schema, tools) and @ai-sdk/openai's default provider (/v1/responses:
// text.format json_schema, function tools); LangChain's withStructuredOutput and bindTools, on chat
// and with useResponsesApi. The model is a tiny story model that knows nothing of JSON: each output
// is valid only because the decoding is grammar-constrained (issue 15), so these tests need the
// structured-outputs and tool-calling work on chat; /v1/responses passes them through to it.
import assert from "node:assert/strict";
import { z } from "zod";
import { generateObject, generateText, tool } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { createOpenAI } from "@ai-sdk/openai";
import { ChatOpenAI } from "@langchain/openai";
import type { Server } from "../../server/server.ts";
import { storiesServer } from "../helpers.ts";

const KEY = "sk-clients-structured-0123";
const MODEL = "stories260K";
const TEMPLATE = Deno.readTextFileSync(new URL("../../models/stories260K/chat_template.jinja", import.meta.url));

/** Small, bounded values: a constrained decoder on a model that knows no JSON finishes them quickly. */
const Pet = z.object({ kind: z.enum(["cat", "dog", "bird"]), legs: z.number().int().min(0).max(4), happy: z.boolean() });
const WEATHER = { name: "get_weather", description: "The weather in a city", parameters: z.object({ city: z.enum(["Paris", "Oslo"]) }) };

const opts = { sanitizeOps: false, sanitizeResources: false };
// generateObject is what issue 15 names; AI SDK 7 deprecates it (for generateText's `output`) with a console warning
(globalThis as { AI_SDK_LOG_WARNINGS?: boolean }).AI_SDK_LOG_WARNINGS = false;

async function withServer(fn: (url: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "qlora-clients-structured-" });
  const s: Server = await storiesServer(root, { chatTemplate: TEMPLATE, keys: [{ key: KEY, tenant: "t1" }] });
  const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, s.app.fetch);
  try {
    await fn(`http://127.0.0.1:${srv.addr.port}`);
  } finally {
    await srv.shutdown();
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test({
  name: "Vercel AI SDK: generateObject (zod) and a forced tool call, via openai-compatible (chat) and @ai-sdk/openai (responses)",
  ...opts,
  fn: async () => {
    await withServer(async (url) => {
      const compatible = createOpenAICompatible({ name: "qlora", baseURL: `${url}/v1`, apiKey: KEY, supportsStructuredOutputs: true });
      const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: KEY });
      for (const [name, model] of [["openai-compatible", compatible.chatModel(MODEL)], ["openai (responses)", openai(MODEL)]] as const) {
        for (const temperature of [0, 1]) {
          const { object } = await generateObject({
            model,
            schema: Pet,
            schemaName: "pet",
            prompt: "Tell me about a pet.",
            temperature,
            maxOutputTokens: 64,
            maxRetries: 0,
          });
          assert.deepEqual(Pet.parse(object), object, name);
        }
        const r = await generateText({
          model,
          prompt: "What is the weather in Paris?",
          tools: { [WEATHER.name]: tool({ description: WEATHER.description, inputSchema: WEATHER.parameters }) },
          toolChoice: { type: "tool", toolName: WEATHER.name },
          maxOutputTokens: 160, // stories260K spells a call in ~70 tokens (a 512-token vocabulary)
          maxRetries: 0,
        });
        assert.equal(r.finishReason, "tool-calls", name);
        assert.equal(r.toolCalls.length, 1, name);
        assert.equal(r.toolCalls[0].toolName, WEATHER.name, name);
        WEATHER.parameters.parse(r.toolCalls[0].input);
      }
    });
  },
});

Deno.test({
  name: "LangChain ChatOpenAI: withStructuredOutput (zod) and bindTools with a forced tool, on chat and with useResponsesApi",
  ...opts,
  fn: async () => {
    await withServer(async (url) => {
      for (const useResponsesApi of [false, true]) {
        const llm = new ChatOpenAI({
          model: MODEL,
          apiKey: KEY,
          configuration: { baseURL: `${url}/v1` },
          temperature: 1,
          maxTokens: 160,
          maxRetries: 0,
          useResponsesApi,
        });
        const what = `useResponsesApi ${useResponsesApi}`;
        const structured = llm.withStructuredOutput(Pet, { name: "pet", method: "jsonSchema", strict: true });
        const pet = await structured.invoke("Tell me about a pet.");
        assert.deepEqual(Pet.parse(pet), pet, what);

        const withTools = llm.bindTools([{
          type: "function",
          function: { name: WEATHER.name, description: WEATHER.description, parameters: z.toJSONSchema(WEATHER.parameters) },
        }], { tool_choice: WEATHER.name });
        const m = await withTools.invoke("What is the weather in Oslo?");
        assert.equal(m.tool_calls?.length, 1, what);
        assert.equal(m.tool_calls![0].name, WEATHER.name, what);
        WEATHER.parameters.parse(m.tool_calls![0].args);
      }
    });
  },
});
