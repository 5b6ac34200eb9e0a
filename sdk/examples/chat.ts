// chat.ts — one chat completion.
//
//   deno task start                                    # in another terminal
//   deno run --allow-net --allow-env sdk/examples/chat.ts
//
// QLORA_BASE_URL (default http://127.0.0.1:8000/v1) and QLORA_API_KEY are read from the environment.
import { QloraClient } from "../mod.ts";

const client = new QloraClient();

// The base model is the one model without a parent (adapters list the base as their parent).
const { data: models } = await client.models.list();
const base = models.find((m) => !m.parent)!;

const completion = await client.chat.completions.create({
  model: base.id,
  messages: [
    { role: "system", content: "You are a terse assistant." },
    { role: "user", content: "Tell me a very short story." },
  ],
  max_completion_tokens: 32,
  temperature: 0.7,
  seed: 42,
});

console.log(completion.choices[0].message.content);
console.log(`finish: ${completion.choices[0].finish_reason}; tokens: ${completion.usage?.total_tokens}`);
