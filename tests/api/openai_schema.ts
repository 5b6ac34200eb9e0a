// openai_schema.ts — checks a response body against OpenAI's published response schemas
// (tests/fixtures/openai/: openai_responses.schema.json, the chat/completions/models/files/fine-tuning
// subset, and openai_responses_api.schema.json, the Responses API's Response and stream events;
// JSON Schema 2020-12) with ajv.
import { Ajv2020 } from "ajv/dist/2020.js";
import assert from "node:assert/strict";

const read = (name: string) => JSON.parse(Deno.readTextFileSync(new URL(`../fixtures/openai/${name}`, import.meta.url)));
const SCHEMAS = { openai: read("openai_responses.schema.json"), "openai-responses": read("openai_responses_api.schema.json") };
// strict: false — the spec's own keywords (e.g. `default` beside oneOf, `title`, `discriminator`) are
// not errors; formats (`unixtime`) are not checked
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
for (const [id, s] of Object.entries(SCHEMAS)) ajv.addSchema(s, id);

/** Asserts that `value` is an instance of OpenAI's `#/$defs/<def>` (in whichever fixture has it), naming every violation. */
export function assertOpenAi(def: string, value: unknown, what = def): void {
  const id = Object.entries(SCHEMAS).find(([, s]) => def in s.$defs)?.[0];
  const v = id ? ajv.getSchema(`${id}#/$defs/${def}`) : undefined;
  if (!v) throw new Error(`no schema ${def}`);
  if (!v(value)) {
    assert.fail(
      `${what} is not OpenAI's ${def}: ${ajv.errorsText(v.errors, { separator: "; " })}\n${JSON.stringify(value).slice(0, 2000)}`,
    );
  }
}
