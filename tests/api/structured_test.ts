// structured_test.ts — grammar-constrained outputs over real HTTP on the random-weight tiny model
// (its logits are near uniform, so every token the grammar allows gets drawn sooner or later):
// 200 samples at temperature 1 across 10 schemas, streamed and not, n > 1, with free requests and
// two adapters in the same batches; every output parses and validates (ajv). Then json_object,
// vLLM's structured_outputs (regex, choice, grammar, json) on chat and completions, a cut output
// ("length"), and the 400s that name what is not supported.
import assert from "node:assert/strict";
import { Ajv2020 } from "ajv/dist/2020.js";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { sseData } from "../helpers.ts";
import { assertOpenAi } from "./openai_schema.ts";
import { opts, tinyServer } from "./structured_helpers.ts";

const obj = (properties: Record<string, unknown>, required = Object.keys(properties)) => ({
  type: "object",
  properties,
  required,
  additionalProperties: false,
});

/** Ten schemas: enums, nested objects, arrays with min/maxItems, integers with bounds,
 * required/optional, anyOf, string patterns, string lengths, a root array, $defs/$ref/const. */
const SCHEMAS: Record<string, unknown> = {
  enums: obj({ color: { enum: ["red", "green", "blue"] }, size: { enum: [1, 2, 3] }, ok: { type: "boolean" } }),
  nested: obj({
    user: obj({ id: { type: "integer", minimum: 0, maximum: 999 }, admin: { type: "boolean" }, role: obj({ name: { enum: ["a", "b"] } }) }),
  }),
  arrays: obj({
    tags: { type: "array", items: { enum: ["x", "y", "z"] }, minItems: 1, maxItems: 3 },
    pair: { type: "array", items: { type: "boolean" }, minItems: 2, maxItems: 2 },
  }),
  integers: obj({
    age: { type: "integer", minimum: 18, maximum: 65 },
    score: { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 10 },
    neg: { type: "integer", minimum: -50, maximum: -3 },
  }),
  optional: obj({ a: { type: "integer", minimum: 0, maximum: 9 }, b: { type: "boolean" }, c: { enum: ["p", "q"] } }, ["a"]),
  anyof: obj({ v: { anyOf: [{ type: "integer", minimum: 0, maximum: 100 }, { type: "null" }, { enum: ["none", "all"] }] } }),
  patterns: obj({
    code: { type: "string", pattern: "^[A-Z]{3}-[0-9]{3}$" },
    month: { type: "string", pattern: "^20[0-9]{2}-(0[1-9]|1[0-2])$" },
  }),
  lengths: obj({ name: { type: "string", minLength: 1, maxLength: 5 }, note: { type: "string", maxLength: 3 } }),
  root_array: { type: "array", items: obj({ x: { type: "integer", minimum: -5, maximum: 5 } }), minItems: 2, maxItems: 4 },
  refs: {
    $defs: { pt: obj({ x: { type: "integer", minimum: 0, maximum: 9 }, y: { type: ["integer", "null"], minimum: 0, maximum: 9 } }) },
    ...obj({ kind: { const: "line" }, from: { $ref: "#/$defs/pt" }, to: { $ref: "#/$defs/pt" } }),
  },
};

const ajv = new Ajv2020({ strict: false, allErrors: true });
/** A new base seed each run (printed when a check fails), so runs cover more samples. */
const BASE = Math.floor(Math.random() * 1e6);
const MESSAGES = [{ role: "user", content: "Give me JSON." }];

/** The text of a streamed chat choice (content deltas joined) and its finish reason. */
async function streamedChat(res: Response): Promise<{ texts: string[]; finish: string[] }> {
  assert.equal(res.status, 200, await res.clone().text());
  const texts: string[] = [], finish: string[] = [];
  for (const d of sseData(await res.text())) {
    if (d === "[DONE]") continue;
    const chunk = JSON.parse(d);
    assertOpenAi("CreateChatCompletionStreamResponse", chunk);
    for (const c of chunk.choices) {
      texts[c.index] = (texts[c.index] ?? "") + (c.delta.content ?? "");
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { texts, finish };
}

Deno.test({
  name:
    "structured outputs: 200 samples over 10 schemas at temperature 1 on random weights all parse and validate (streamed, n > 1, adapters and free requests in the batch)",
  ...opts,
  fn: async () => {
    const srv = await tinyServer();
    try {
      const models = [srv.modelId, "ad-a", "ad-b"];
      const jobs: Promise<void>[] = [];
      let samples = 0;
      const t0 = performance.now();
      Object.entries(SCHEMAS).forEach(([name, schema], si) => {
        const validate = ajv.compile(schema as object);
        const check = (text: string, finish: string, where: string) => {
          where = `${where} (seed base ${BASE})`;
          assert.equal(finish, "stop", `${where}: finish_reason ${finish}: ${text}`);
          let v: unknown;
          try {
            v = JSON.parse(text);
          } catch (e) {
            assert.fail(`${where}: not JSON (${(e as Error).message}): ${text}`);
          }
          assert.ok(validate(v), `${where}: ${ajv.errorsText(validate.errors)}: ${text}`);
          samples++;
        };
        // 4 requests of n = 5 per schema: plain and streamed, on the base model and both adapters
        for (let k = 0; k < 4; k++) {
          const body = {
            model: models[(si + k) % 3],
            messages: MESSAGES,
            n: 5,
            temperature: 1,
            seed: BASE + si * 100 + k,
            max_tokens: 300,
            stream: k % 2 === 1,
            response_format: { type: "json_schema", json_schema: { name, schema, strict: true } },
          };
          jobs.push((async () => {
            const res = await srv.post("/v1/chat/completions", body);
            if (body.stream) {
              const { texts, finish } = await streamedChat(res);
              assert.equal(texts.length, 5);
              texts.forEach((t, i) => check(t, finish[i], `${name} stream ${k}.${i}`));
            } else {
              const out = await res.json();
              assert.equal(res.status, 200, JSON.stringify(out));
              assertOpenAi("CreateChatCompletionResponse", out);
              for (const c of out.choices) check(c.message.content, c.finish_reason, `${name} ${k}.${c.index}`);
            }
          })());
        }
        // a free request beside them (same batch)
        jobs.push((async () => {
          const res = await srv.post("/v1/chat/completions", {
            model: models[si % 3],
            messages: MESSAGES,
            max_tokens: 20,
            temperature: 1,
            ignore_eos: true,
          });
          assert.equal(res.status, 200);
          const out = await res.json();
          assert.equal(out.choices[0].finish_reason, "length");
          assert.equal(out.usage.completion_tokens, 20);
        })());
      });
      await Promise.all(jobs);
      assert.equal(samples, 200);
      const masks = await srv.maskStats();
      console.log(`next-token masks: ${masks.masks}, ${(masks.ms / masks.masks).toFixed(3)} ms each (vocabulary 512)`);
      console.log(`200 constrained samples in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      await srv.close();
    }
  },
});

Deno.test({
  name: "structured outputs: json_object, structured_outputs regex/choice/grammar/json on chat and completions, length, and the 400s",
  ...opts,
  fn: async () => {
    const srv = await tinyServer();
    try {
      // json_object: free-form strings on random weights run long, so the quote and brace tokens are
      // made likely with logit_bias (it acts before the grammar's mask): any weights, valid JSON
      const tok = await Tokenizer.load(srv.modelDir);
      const bias: Record<string, number> = {};
      for (let id = 0; id < tok.vocabSize; id++) {
        const t = tok.decode([id], { skipSpecialTokens: false });
        if (!tok.isSpecial(id) && /["}]/.test(t)) bias[id] = 6;
      }
      const jo = await srv.client.chat.completions.create({
        model: srv.modelId,
        messages: [{ role: "user", content: "JSON please" }],
        response_format: { type: "json_object" },
        logit_bias: bias,
        n: 4,
        seed: 1,
        max_tokens: 300,
      });
      for (const c of jo.choices) {
        assert.equal(c.finish_reason, "stop", c.message.content ?? "");
        const v = JSON.parse(c.message.content!);
        assert.ok(v && typeof v === "object" && !Array.isArray(v), c.message.content!);
      }

      // structured_outputs on completions: regex and choice, plain and streamed
      const regex = "[a-z]{2,4}@[0-9]{2}\\.(com|org)";
      let res = await srv.post("/v1/completions", {
        model: "ad-a",
        prompt: "Email:",
        n: 6,
        max_tokens: 40,
        structured_outputs: { regex },
      });
      let out = await res.json();
      assert.equal(res.status, 200, JSON.stringify(out));
      for (const c of out.choices) assert.match(c.text, new RegExp(`^${regex}$`), c.text), assert.equal(c.finish_reason, "stop");
      res = await srv.post("/v1/completions", {
        model: srv.modelId,
        prompt: "Pick:",
        n: 6,
        max_tokens: 20,
        stream: true,
        structured_outputs: { choice: ["yes", "no", "maybe so"] },
      });
      const texts: string[] = [];
      for (const d of sseData(await res.text())) {
        if (d !== "[DONE]") { for (const c of JSON.parse(d).choices) texts[c.index] = (texts[c.index] ?? "") + c.text; }
      }
      assert.equal(texts.length, 6);
      for (const t of texts) assert.ok(["yes", "no", "maybe so"].includes(t), t);

      // on chat: an EBNF grammar and a JSON schema given as vLLM's json
      res = await srv.post("/v1/chat/completions", {
        model: "ad-b",
        messages: MESSAGES,
        n: 4,
        max_tokens: 40,
        structured_outputs: { grammar: 'root ::= "(" num ("+" num)* ")"\nnum ::= [1-9] [0-9]?' },
      });
      out = await res.json();
      assert.equal(res.status, 200, JSON.stringify(out));
      for (const c of out.choices) assert.match(c.message.content, /^\([1-9][0-9]?(\+[1-9][0-9]?)*\)$/);
      const { texts: t2 } = await streamedChat(
        await srv.post("/v1/chat/completions", {
          model: srv.modelId,
          messages: MESSAGES,
          stream: true,
          max_tokens: 60,
          structured_outputs: { json: SCHEMAS.enums },
        }),
      );
      assert.ok(ajv.validate(SCHEMAS.enums as object, JSON.parse(t2[0])), t2[0]);

      // max_tokens cuts a constrained output: finish_reason "length", as OpenAI's
      const cut = await srv.client.chat.completions.create({
        model: srv.modelId,
        messages: [{ role: "user", content: "x" }],
        max_tokens: 3,
        response_format: { type: "json_schema", json_schema: { name: "n", schema: SCHEMAS.nested as Record<string, unknown> } },
      });
      assert.equal(cut.choices[0].finish_reason, "length");

      // what the grammar cannot enforce is refused by name
      const refused = async (body: Record<string, unknown>, param: string, pattern: RegExp, path = "/v1/chat/completions") => {
        const r = await srv.post(path, { model: srv.modelId, max_tokens: 5, ...body });
        const e = await r.json();
        assert.equal(r.status, 400, JSON.stringify(e));
        assert.equal(e.error.param, param, JSON.stringify(e));
        assert.match(e.error.message, pattern);
      };
      const rf = (schema: unknown) => ({
        messages: MESSAGES,
        response_format: { type: "json_schema", json_schema: { name: "s", schema } },
      });
      await refused(rf({ type: "array", uniqueItems: true }), "response_format.json_schema.schema", /"uniqueItems"/);
      await refused(rf(obj({ a: { not: { type: "string" } } })), "response_format.json_schema.schema", /"not".*\/properties\/a\/not/);
      await refused(rf({ type: "string", pattern: "^a+$", maxLength: 3 }), "response_format.json_schema.schema", /"maxLength".*"pattern"/);
      await refused(rf({ oneOf: [{ type: "integer" }] }), "response_format.json_schema.schema", /"oneOf"/);
      // a pattern that could match what JSON must escape would break the string it fills
      await refused(rf({ type: "string", pattern: "^a.b$" }), "response_format.json_schema.schema", /any character/);
      await refused(rf({ type: "string", pattern: "^\\s+$" }), "response_format.json_schema.schema", /escape \\s/);
      await refused({ prompt: "x", structured_outputs: { regex: "(a" } }, "structured_outputs.regex", /does not parse/, "/v1/completions");
      await refused({ prompt: "x", structured_outputs: { regex: "a(?=b)" } }, "structured_outputs.regex", /lookaround/, "/v1/completions");
      await refused(
        { prompt: "x", structured_outputs: { json: { type: "number", multipleOf: 2 } } },
        "structured_outputs.json",
        /"multipleOf"/,
        "/v1/completions",
      );
      await refused(
        { messages: MESSAGES, structured_outputs: { grammar: "root ::= ( undefined_rule" } },
        "structured_outputs.grammar",
        /does not compile/,
      );
      await refused(
        { messages: MESSAGES, structured_outputs: { regex: "a" }, response_format: { type: "json_object" } },
        "structured_outputs",
        /cannot be combined/,
      );
      // the server still serves constrained requests after a grammar that failed to compile
      res = await srv.post("/v1/completions", { model: srv.modelId, prompt: "x", max_tokens: 5, structured_outputs: { choice: ["ok"] } });
      assert.equal((await res.json()).choices[0].text, "ok");
    } finally {
      await srv.close();
    }
  },
});
