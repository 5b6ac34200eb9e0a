// streaming.ts — a streamed chat completion, printed as it arrives, and a stream stopped early.
//
//   deno run --allow-net --allow-env sdk/examples/streaming.ts
import { QloraClient } from "../mod.ts";

const client = new QloraClient();
const base = (await client.models.list()).data.find((m) => !m.parent)!;

// `stream: true` makes create() resolve to a Stream of chat.completion.chunk objects.
const stream = await client.chat.completions.create({
  model: base.id,
  messages: [{ role: "user", content: "Count to ten." }],
  max_tokens: 48,
  stream: true,
  stream_options: { include_usage: true },
});
const out = new TextEncoder();
for await (const chunk of stream) {
  const text = chunk.choices[0]?.delta.content ?? "";
  await writeOut(out.encode(text));
  if (chunk.usage) console.log(`\n(${chunk.usage.completion_tokens} tokens)`);
}

// Stop a stream part-way: abort() cancels the request, so the server stops generating too.
const long = await client.completions.create({
  model: base.id,
  prompt: "Once upon a time",
  max_tokens: 400,
  ignore_eos: true,
  stream: true,
});
let pieces = 0;
for await (const chunk of long) {
  await writeOut(out.encode(chunk.choices[0]?.text ?? ""));
  if (++pieces === 10) long.abort(); // the loop then ends quietly
}
console.log(`\n(${long.aborted ? "stopped" : "finished"} after ${pieces} chunks)`);

async function writeOut(bytes: Uint8Array): Promise<void> {
  await Deno.stdout.write(bytes); // (in Node: process.stdout.write)
}
