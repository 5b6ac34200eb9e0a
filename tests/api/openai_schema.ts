// openai_schema.ts — checks a response body against OpenAI's published response schemas
// (tests/fixtures/openai/openai_responses.schema.json, JSON Schema 2020-12) with ajv.
import { Ajv2020 } from "ajv/dist/2020.js";
import assert from "node:assert/strict";

const SCHEMA = JSON.parse(Deno.readTextFileSync(new URL("../fixtures/openai/openai_responses.schema.json", import.meta.url)));
// strict: false — the spec's own keywords (e.g. `default` beside oneOf, `title`) are not errors
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema(SCHEMA, "openai");

/** Asserts that `value` is an instance of OpenAI's `#/$defs/<def>`, naming every violation. */
export function assertOpenAi(def: string, value: unknown, what = def): void {
  const v = ajv.getSchema(`openai#/$defs/${def}`);
  if (!v) throw new Error(`no schema ${def}`);
  if (!v(value)) {
    assert.fail(
      `${what} is not OpenAI's ${def}: ${ajv.errorsText(v.errors, { separator: "; " })}\n${JSON.stringify(value).slice(0, 2000)}`,
    );
  }
}
