// tools_test.ts — tool calling over real HTTP on the random-weight tiny model with a Hermes-style
// template (tests/fixtures/templates/hermes.jinja): tool_choice required / named give valid calls
// whatever the weights, stream deltas reassemble to the same calls, history with tool calls and
// tool results renders, and the openai client's chat.completions.parse with zod works. Then the
// Llama 3.1 and Mistral formats' forced grammars and parsers without a server.
import assert from "node:assert/strict";
import { Ajv2020 } from "ajv/dist/2020.js";
import { z } from "zod";
import { zodFunction, zodResponseFormat } from "openai/helpers/zod";
import { sseData } from "../helpers.ts";
import { assertOpenAi } from "./openai_schema.ts";
import { opts, tinyServer } from "./structured_helpers.ts";
import { type FunctionTool, parseToolOutput, toolCallsOf, toolFormatOf, ToolStreamParser } from "../../server/api/tools.ts";
import { forcedCallGrammar } from "../../server/api/tools.ts";
import { GrammarCompiler, grammarVocab } from "../../server/engine/grammar.ts";
import { Sampler } from "../../server/engine/sampling.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { tinyModel } from "../helpers.ts";

const HERMES = Deno.readTextFileSync(new URL("../fixtures/templates/hermes.jinja", import.meta.url));

const TOOLS: FunctionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: {
        type: "object",
        properties: { city: { enum: ["Paris", "Rome", "Oslo"] }, days: { type: "integer", minimum: 1, maximum: 7 } },
        required: ["city", "days"],
        additionalProperties: false,
      },
    },
  },
  {
    type: "function",
    function: {
      name: "lookup",
      parameters: {
        type: "object",
        properties: { query: { type: "string", maxLength: 8 }, exact: { type: "boolean" } },
        required: ["query"],
        additionalProperties: false,
      },
    },
  },
];
const ajv = new Ajv2020({ strict: false });
const validators = Object.fromEntries(TOOLS.map((t) => [t.function.name, ajv.compile(t.function.parameters!)]));
const MESSAGES = [{ role: "user" as const, content: "What is the weather in Paris?" }];

function checkCall(c: { id: string; type: string; function: { name: string; arguments: string } }, names: string[]): void {
  assert.match(c.id, /^call_/);
  assert.equal(c.type, "function");
  assert.ok(names.includes(c.function.name), c.function.name);
  const args = JSON.parse(c.function.arguments);
  assert.ok(
    validators[c.function.name](args),
    `${c.function.name}(${c.function.arguments}): ${ajv.errorsText(validators[c.function.name].errors)}`,
  );
}

Deno.test({
  name: "tools: required and named tool_choice give valid tool_calls on random weights; streamed deltas reassemble to the same calls",
  ...opts,
  fn: async () => {
    const srv = await tinyServer({ chatTemplate: HERMES });
    try {
      const names = TOOLS.map((t) => t.function.name);
      // required, several choices, on the base model and an adapter
      for (const model of [srv.modelId, "ad-a"]) {
        const r = await srv.client.chat.completions.create({
          model,
          messages: MESSAGES,
          tools: TOOLS,
          tool_choice: "required",
          n: 4,
          temperature: 1,
          seed: 3,
          max_tokens: 600,
        });
        assertOpenAi("CreateChatCompletionResponse", r);
        for (const ch of r.choices) {
          assert.equal(ch.finish_reason, "tool_calls", JSON.stringify(ch));
          assert.ok(ch.message.tool_calls && ch.message.tool_calls.length >= 1);
          for (const c of ch.message.tool_calls!) checkCall(c as never, names);
        }
      }
      // named, no parallel calls: exactly one call to that function
      const named = await srv.client.chat.completions.create({
        model: "ad-b",
        messages: MESSAGES,
        tools: TOOLS,
        tool_choice: { type: "function", function: { name: "lookup" } },
        n: 3,
        seed: 4,
        max_tokens: 200,
      });
      for (const ch of named.choices) {
        assert.equal(ch.message.tool_calls?.length, 1);
        checkCall(ch.message.tool_calls![0] as never, ["lookup"]);
      }
      const single = await srv.client.chat.completions.create({
        model: srv.modelId,
        messages: MESSAGES,
        tools: TOOLS,
        tool_choice: "required",
        parallel_tool_calls: false,
        n: 3,
        seed: 5,
        max_tokens: 200,
      });
      for (const ch of single.choices) assert.equal(ch.message.tool_calls?.length, 1);

      // the same request streamed (same seed: same tokens): deltas in OpenAI's shape reassemble to the calls
      const body = { model: srv.modelId, messages: MESSAGES, tools: TOOLS, tool_choice: "required", n: 2, seed: 7, max_tokens: 600 };
      const whole = await (await srv.post("/v1/chat/completions", body)).json();
      const res = await srv.post("/v1/chat/completions", { ...body, stream: true });
      const calls: { id?: string; name?: string; args: string }[][] = [[], []];
      const finish: string[] = [];
      for (const d of sseData(await res.text())) {
        if (d === "[DONE]") continue;
        const chunk = JSON.parse(d);
        assertOpenAi("CreateChatCompletionStreamResponse", chunk);
        for (const ch of chunk.choices) {
          if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
          for (const tc of ch.delta.tool_calls ?? []) {
            const slot = calls[ch.index][tc.index];
            if (!slot) {
              // the first piece of a call: its id, type and name
              assert.ok(tc.id && tc.type === "function" && tc.function.name, JSON.stringify(tc));
              calls[ch.index][tc.index] = { id: tc.id, name: tc.function.name, args: tc.function.arguments ?? "" };
            } else {
              assert.equal(tc.id, undefined);
              slot.args += tc.function?.arguments ?? "";
            }
          }
        }
      }
      assert.deepEqual(finish, ["tool_calls", "tool_calls"]);
      for (const ch of whole.choices) {
        const want = ch.message.tool_calls.map((
          c: { function: { name: string; arguments: string } },
        ) => [c.function.name, c.function.arguments]);
        assert.deepEqual(calls[ch.index].map((c) => [c.name, c.args]), want);
      }
    } finally {
      await srv.close();
    }
  },
});

Deno.test({
  name: "tools: history with tool calls and tool results renders; tools reach the template; openai's chat.completions.parse with zod",
  ...opts,
  fn: async () => {
    const srv = await tinyServer({ chatTemplate: HERMES });
    try {
      const history = [
        { role: "system", content: "Be brief." },
        ...MESSAGES,
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris", "days": 2}' } }],
        },
        { role: "tool", tool_call_id: "call_1", content: "sunny" },
      ];
      const tok = await (await srv.post("/tokenize", { model: srv.modelId, messages: history })).json();
      const text = (await (await srv.post("/detokenize", { model: srv.modelId, tokens: tok.tokens })).json()).prompt;
      assert.match(text, /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Paris", "days": 2\}\}\n<\/tool_call>/);
      assert.match(text, /<tool_response>\nsunny\n<\/tool_response>/);
      assert.ok(text.endsWith("<|im_start|>assistant\n"));

      // tools reach the template (they are written into the system turn), and auto may answer in text
      const plain = await srv.client.chat.completions.create({ model: srv.modelId, messages: history as never, max_tokens: 3 });
      const withTools = await srv.client.chat.completions.create({
        model: srv.modelId,
        messages: history as never,
        tools: TOOLS,
        max_tokens: 3,
      });
      assert.ok(withTools.usage!.prompt_tokens > plain.usage!.prompt_tokens + 50);
      assert.equal(withTools.choices[0].finish_reason, "length");

      // the openai client's parse helper: a zod schema as response_format, parsed for the caller
      const Weather = z.object({
        city: z.enum(["Paris", "Rome"]),
        days: z.number().int().min(1).max(5),
        rain: z.boolean(),
        hours: z.array(z.number().int().min(0).max(23)).max(2),
      });
      const parsed = await srv.client.chat.completions.parse({
        model: "ad-a",
        messages: MESSAGES,
        response_format: zodResponseFormat(Weather, "weather"),
        n: 3,
        max_tokens: 100,
      });
      for (const ch of parsed.choices) {
        assert.ok(ch.message.parsed, ch.message.content ?? "");
        Weather.parse(ch.message.parsed);
      }
      // and a zod tool, forced: parsed arguments
      const Lookup = z.object({ query: z.enum(["a", "b"]), limit: z.number().int().min(1).max(3) });
      const withTool = await srv.client.chat.completions.parse({
        model: srv.modelId,
        messages: MESSAGES,
        tools: [zodFunction({ name: "lookup", parameters: Lookup })],
        tool_choice: { type: "function", function: { name: "lookup" } },
        max_tokens: 100,
      });
      const call = withTool.choices[0].message.tool_calls![0];
      assert.equal(call.type, "function");
      if (call.type === "function") Lookup.parse(call.function.parsed_arguments);

      // refusals name the field
      const bad = await srv.post("/v1/chat/completions", {
        model: srv.modelId,
        messages: MESSAGES,
        tools: TOOLS,
        tool_choice: { type: "function", function: { name: "nope" } },
      });
      const e = await bad.json();
      assert.equal(bad.status, 400);
      assert.equal(e.error.param, "tool_choice");
      // parameters the grammar cannot enforce: fine for auto (they only reach the template), a 400 when forced
      const rich = [{
        type: "function",
        function: { name: "f", parameters: { type: "object", properties: { x: { oneOf: [{ type: "integer" }] } } } },
      }];
      const auto = await srv.post("/v1/chat/completions", { model: srv.modelId, messages: MESSAGES, tools: rich, max_tokens: 2 });
      assert.equal(auto.status, 200, await auto.clone().text());
      await auto.body?.cancel();
      const forced = await srv.post("/v1/chat/completions", {
        model: srv.modelId,
        messages: MESSAGES,
        tools: rich,
        tool_choice: "required",
      });
      const fe = await forced.json();
      assert.equal(forced.status, 400);
      assert.equal(fe.error.param, "tools[0].function.parameters");
      assert.match(fe.error.message, /"oneOf"/);
    } finally {
      await srv.close();
    }
  },
});

Deno.test("tools: formats from the template; Llama 3.1 JSON and Mistral [TOOL_CALLS] forced calls parse, whole and streamed", async () => {
  assert.equal(toolFormatOf(HERMES), "hermes");
  assert.equal(toolFormatOf("{{ '<|python_tag|>' }} ipython"), "llama3");
  assert.equal(toolFormatOf("[AVAILABLE_TOOLS] [TOOL_CALLS]"), "mistral");
  assert.equal(toolFormatOf("{{ messages }}"), "hermes");

  const dir = await tinyModel();
  const tok = await Tokenizer.load(dir);
  const stops = [tok.eosTokenId!];
  const compiler = await GrammarCompiler.create(grammarVocab(tok, 512, stops));
  try {
    for (const format of ["llama3", "mistral", "hermes"] as const) {
      for (let seed = 0; seed < 6; seed++) {
        const g = await compiler.matcher(forcedCallGrammar(format, TOOLS, seed % 2 === 0), "tools", stops);
        const s = new Sampler({ temperature: 1, seed });
        const ids: number[] = [];
        for (let i = 0; i < 400 && !g.terminated; i++) {
          await g.ready();
          const r = s.sample(new Float32Array(512), [], [], g.mask);
          assert.ok(g.accept(r.token));
          if (!g.terminated) ids.push(r.token);
        }
        assert.ok(g.terminated, `${format}: the call did not end`);
        g.dispose();
        const text = tok.decode(ids);
        const out = toolCallsOf(format, text);
        assert.ok(out, `${format}: ${text}`);
        for (const c of out.calls) checkCall(c, TOOLS.map((t) => t.function.name));
        // streamed piece by piece (token texts), the deltas give the same calls
        const p = new ToolStreamParser(format);
        const got: { name: string; args: string }[] = [];
        const pieces = ids.map((id) => tok.decode([id]));
        pieces.forEach((piece, i) => {
          for (const d of p.push(piece, i === pieces.length - 1).toolCalls) {
            if (d.function.name !== undefined) got[d.index] = { name: d.function.name, args: d.function.arguments };
            else got[d.index].args += d.function.arguments;
          }
        });
        assert.deepEqual(got, out.calls.map((c) => ({ name: c.function.name, args: c.function.arguments })), text);
      }
    }
  } finally {
    compiler.dispose();
  }
  // auto: text that is no call stays content; a call after some text is parsed
  assert.equal(toolCallsOf("hermes", "just words"), null);
  const mixed = toolCallsOf("hermes", 'Let me check.\n<tool_call>\n{"name": "lookup", "arguments": {"query": "x"}}\n</tool_call>');
  assert.equal(mixed?.content, "Let me check.");
  assert.equal(mixed?.calls[0].function.arguments, '{"query": "x"}');
  assert.deepEqual(parseToolOutput("hermes", "Hi <tool_c", false).content, "Hi ");
});
