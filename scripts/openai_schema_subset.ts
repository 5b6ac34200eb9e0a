// openai_schema_subset.ts — cuts a subset of OpenAI's published spec (github.com/openai/openai-openapi,
// openapi.json, MIT licence) into a JSON Schema 2020-12 document: the named components.schemas with
// their $ref closure under $defs, descriptions dropped, OpenAPI 3.0 leftovers (`nullable`, boolean
// `exclusiveMinimum`) and 2019-09's `$recursiveRef` turned into 2020-12. Made tests/fixtures/openai/openai_responses_api.schema.json:
//
//   deno run --allow-read --allow-write scripts/openai_schema_subset.ts openapi.json f85dbe2 OUT.json Response ResponseStreamEvent …
type J = unknown;

const [specPath, commit, out, ...roots] = Deno.args;
if (!specPath || !commit || !out || roots.length === 0) {
  console.error("usage: openai_schema_subset.ts openapi.json COMMIT OUT.json ROOT…");
  Deno.exit(2);
}
const spec = JSON.parse(Deno.readTextFileSync(specPath));
const all: Record<string, J> = spec.components.schemas;

const PREFIX = "#/components/schemas/";
function convert(v: J, refs: Set<string>, self: string): J {
  if (Array.isArray(v)) return v.map((x) => convert(x, refs, self));
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, J>;
  const r: Record<string, J> = {};
  for (const [k, x] of Object.entries(o)) {
    if (k === "description" || k === "example" || k === "examples" || k.startsWith("x-")) continue;
    if (k === "$ref" && typeof x === "string" && x.startsWith(PREFIX)) {
      const name = x.slice(PREFIX.length);
      refs.add(name);
      r.$ref = `#/$defs/${name}`;
      continue;
    }
    if (k === "nullable" || k === "$recursiveAnchor") continue;
    // 2019-09's recursive reference to the schema itself (CompoundFilter) → a $ref to its own def
    if (k === "$recursiveRef" && x === "#") {
      r.$ref = `#/$defs/${self}`;
      continue;
    }
    if ((k === "exclusiveMinimum" || k === "exclusiveMaximum") && typeof x === "boolean") continue;
    // `properties` maps names to schemas: a property may be called "description"
    if (k === "properties" && x && typeof x === "object") {
      r[k] = Object.fromEntries(Object.entries(x as Record<string, J>).map(([p, s]) => [p, convert(s, refs, self)]));
      continue;
    }
    r[k] = convert(x, refs, self);
  }
  if (typeof o.exclusiveMinimum === "boolean" && o.exclusiveMinimum && "minimum" in r) {
    r.exclusiveMinimum = r.minimum;
    delete r.minimum;
  }
  if (typeof o.exclusiveMaximum === "boolean" && o.exclusiveMaximum && "maximum" in r) {
    r.exclusiveMaximum = r.maximum;
    delete r.maximum;
  }
  if (o.nullable === true) return { anyOf: [r, { type: "null" }] };
  return r;
}

const defs: Record<string, J> = {};
const todo = [...roots];
while (todo.length) {
  const name = todo.pop()!;
  if (name in defs) continue;
  if (!(name in all)) throw new Error(`no schema ${name}`);
  const refs = new Set<string>();
  defs[name] = convert(all[name], refs, name);
  for (const r of refs) if (!(r in defs)) todo.push(r);
}
const sorted = Object.fromEntries(Object.keys(defs).sort().map((k) => [k, defs[k]]));
Deno.writeTextFileSync(
  out,
  JSON.stringify({
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $comment: `Subset of openai/openai-openapi openapi.json (commit ${commit}, MIT): components.schemas ${roots.join(", ")} ` +
      "with their $ref closure. Descriptions dropped; OpenAPI 3.0 leftovers (nullable, boolean exclusiveMinimum) turned into JSON Schema 2020-12.",
    $defs: sorted,
  }) + "\n",
);
console.log(`${Object.keys(sorted).length} schemas → ${out}`);
