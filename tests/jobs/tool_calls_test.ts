// tool_calls_test.ts — fine-tuning files with tools (OpenAI's format: `tools` beside `messages`,
// assistants' `tool_calls`, `tool` results): validated at upload (each call names one of the
// example's tools, arguments are a JSON object's text), rendered through the model's chat template
// with the tools (the loss on the call as the template writes it), refused with the reason when the
// template does not render tools; and over HTTP, a model taught to call a tool calls it, parsed
// into `message.tool_calls` with `tool_choice: "auto"` (nothing forces the call).
import assert from "node:assert/strict";
import { makeModel } from "../../server/model/make_model.ts";
import { createServer } from "../../server/server.ts";
import { Tokenizer } from "../../server/model/tokenizer.ts";
import { DatasetError, parseExample, tokenizeExample } from "../../server/training/dataset.ts";
import { TEACH } from "./fixtures.ts";

const HERMES = new URL("../fixtures/templates/hermes.jinja", import.meta.url).pathname;
const KEY = "sk-tools-0123456789";
const TOOLS = [{
  type: "function",
  function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
}];
const call = (city: string) => ({ id: "call_1", type: "function", function: { name: "get_weather", arguments: JSON.stringify({ city }) } });
const example = (city: string) => ({
  messages: [
    { role: "user", content: `${city}?` },
    { role: "assistant", content: null, tool_calls: [call(city)] },
    { role: "tool", tool_call_id: "call_1", content: "sunny" },
    { role: "assistant", content: "It is sunny." },
  ],
  tools: TOOLS,
});

async function toolModel(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "qlora-tools-model-" });
  await makeModel({ shape: "tiny", out: dir, seed: 1, std: 0.15 });
  await Deno.copyFile(HERMES, `${dir}/chat_template.jinja`);
  return dir;
}

Deno.test("tool-calling data: validated per line, rendered with the tools, the call carries the loss", async () => {
  const ex = parseExample(JSON.stringify(example("Paris")), 1);
  assert.equal(ex.kind, "chat");
  const bad = (o: unknown, re: RegExp) =>
    assert.throws(() => parseExample(JSON.stringify(o), 7), (e) => e instanceof DatasetError && re.test(e.message));
  bad({ ...example("Paris"), tools: undefined }, /line 7: messages\[1\] calls tools, but the example has no "tools"/);
  bad({ ...example("Paris"), tools: [{ type: "function", function: { name: "other" } }] }, /calls "get_weather", which is not in "tools"/);
  const notJson = example("Paris");
  notJson.messages[1] = {
    role: "assistant",
    content: null,
    tool_calls: [{ ...call("x"), function: { name: "get_weather", arguments: "{city" } }],
  };
  bad(notJson, /arguments is not JSON text/);
  bad({ ...example("Paris"), functions: [] }, /"functions" \(the deprecated form\) is not supported/);
  bad(
    { messages: [{ role: "user", content: "hi", tool_calls: [call("x")] }, { role: "assistant", content: "x" }], tools: TOOLS },
    /only allowed on assistant/,
  );

  const dir = await toolModel();
  try {
    const tok = await Tokenizer.load(dir);
    const t = tokenizeExample(tok, ex);
    const learned = tok.decode(t.ids.filter((_, i) => t.weights[i] > 0));
    assert.match(learned, /<tool_call>\s*\{"name": "get_weather", "arguments": \{"city": "Paris"\}\}\s*<\/tool_call>/);
    assert.match(learned, /It is sunny\./);
    const all = tok.decode(t.ids);
    assert.match(all, /<tools>/, "the tools reach the template");
    assert.doesNotMatch(
      learned,
      /sunny<\|im_end\|>\n<\|im_start\|>assistant|Paris\?/,
      "the tool's result and the user's turn carry no loss",
    );
    // a template that would drop the tools: refused, with the reason
    const plain = await Tokenizer.load(new URL("../../models/stories260K", import.meta.url).pathname);
    assert.throws(() => tokenizeExample(plain, ex), /does not render tools and tool calls/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "fine-tuning on tool calls over HTTP: the model learns to call the tool, parsed as tool_calls with tool_choice auto",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await toolModel();
    const root = await Deno.makeTempDir({ prefix: "qlora-tools-" });
    const server = await createServer({
      modelDir: dir,
      modelId: "tiny",
      quant: "nf4",
      adapterRoot: `${root}/adapters`,
      dataDir: `${root}/data`,
      threads: 1,
      maxNumSeqs: 4,
      env: false,
      log: null,
      keys: [{ key: KEY, tenant: "acme" }],
      trainComputeShare: 1,
    });
    const req = (path: string, init: RequestInit = {}) =>
      Promise.resolve(server.app.request(path, { ...init, headers: { authorization: `Bearer ${KEY}`, ...(init.headers ?? {}) } }));
    const post = (path: string, body: unknown) =>
      req(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    try {
      const form = new FormData();
      form.append("purpose", "fine-tune");
      form.append("file", new File([Array.from({ length: 16 }, () => JSON.stringify(example("Paris"))).join("\n") + "\n"], "tools.jsonl"));
      const file = await (await req("/v1/files", { method: "POST", body: form })).json();
      assert.ok(file.id, JSON.stringify(file));
      const created = await post("/v1/fine_tuning/jobs", {
        model: "tiny",
        training_file: file.id,
        method: { type: "supervised", supervised: { hyperparameters: { ...TEACH, n_epochs: 6, max_seq_len: 512 } } },
      });
      assert.equal(created.status, 200, await created.clone().text());
      const { id } = await created.json();
      let job: Record<string, unknown> = {};
      for (let i = 0; i < 6000; i++) {
        job = await (await req(`/v1/fine_tuning/jobs/${id}`)).json();
        if (["succeeded", "failed", "cancelled"].includes(job.status as string)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      const res = await post("/v1/chat/completions", {
        model: job.fine_tuned_model,
        messages: [{ role: "user", content: "Paris?" }],
        tools: TOOLS,
        tool_choice: "auto",
        temperature: 0,
        max_tokens: 100,
      });
      assert.equal(res.status, 200, await res.clone().text());
      const choice = (await res.json()).choices[0];
      assert.equal(choice.finish_reason, "tool_calls", JSON.stringify(choice));
      assert.equal(choice.message.tool_calls.length, 1);
      assert.equal(choice.message.tool_calls[0].function.name, "get_weather");
      assert.deepEqual(JSON.parse(choice.message.tool_calls[0].function.arguments), { city: "Paris" });
    } finally {
      await server.close();
      await Deno.remove(root, { recursive: true });
      await Deno.remove(dir, { recursive: true });
    }
  },
});
