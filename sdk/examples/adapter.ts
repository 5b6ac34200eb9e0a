// adapter.ts — a per-request LoRA adapter: register a PEFT folder, then name it as `model`.
//
//   deno run --allow-net --allow-env sdk/examples/adapter.ts [PATH] [ID]
//
// PATH is a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) relative to the
// server's adapter root (`deno task start --adapters DIR`, default ./data/adapters); a tenant's key
// registers from <root>/<tenant>/. With no keys configured every local caller is the admin.
import { ConflictError, QloraClient } from "../mod.ts";

const [path = "my-adapter", id = "my-adapter"] = Deno.args;
const client = new QloraClient();
const base = (await client.models.list()).data.find((m) => !m.parent)!;

try {
  const adapter = await client.adapters.create({ id, path, preload: true });
  console.log(`registered ${adapter.id}: r=${adapter.r}, modules ${adapter.target_modules.join(",")}`);
} catch (e) {
  if (!(e instanceof ConflictError)) throw e;
  console.log(`${id} is already registered`);
}

const prompt = "Once upon a time";
// The same request on the base model and with the adapter: only `model` changes.
for (const model of [base.id, id]) {
  const c = await client.completions.create({ model, prompt, max_tokens: 24, temperature: 0 });
  console.log(`${model}: ${JSON.stringify(prompt + c.choices[0].text)}`);
}

const { data } = await client.adapters.list();
console.log(`adapters: ${data.map((a) => `${a.id}${a.resident ? " (resident)" : ""}`).join(", ")}`);
await client.adapters.delete(id);
console.log(`deleted ${id}`);
