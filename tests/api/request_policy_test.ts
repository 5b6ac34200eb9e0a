// request_policy_test.ts — no request field is silently ignored. Generated from the one list
// (server/api/schemas/request_policy.ts): every unsupported field of chat, completions and responses is a 400
// unsupported_parameter naming it, every refused value a 400 unsupported_value naming it, every
// recorded field is accepted and shows in the request's log line; OpenAI's whole field lists
// (openai 7.55.0) are covered by the list; unknown fields answer OpenAI's "Unrecognized request
// argument supplied", on every route that takes a body.
import assert from "node:assert/strict";
import type { Server } from "../../server/server.ts";
import { CHAT_POLICY, COMPLETIONS_POLICY, type Policy, policyCounts, RESPONSES_POLICY } from "../../server/api/schemas/request_policy.ts";
import { MESSAGE_POLICY } from "../../server/api/schemas/chat.ts";
import { json, makeAdapter, STORIES_SHAPE, storiesServer } from "../helpers.ts";

const MODEL = "stories260K";
const TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}";

/** OpenAI's request fields (openai 7.55.0: ChatCompletionCreateParamsBase, CompletionCreateParamsBase). */
const OPENAI_CHAT_FIELDS = [
  "messages",
  "model",
  "audio",
  "frequency_penalty",
  "function_call",
  "functions",
  "logit_bias",
  "logprobs",
  "max_completion_tokens",
  "max_tokens",
  "metadata",
  "modalities",
  "moderation",
  "n",
  "parallel_tool_calls",
  "prediction",
  "presence_penalty",
  "prompt_cache_key",
  "prompt_cache_options",
  "prompt_cache_retention",
  "reasoning_effort",
  "response_format",
  "safety_identifier",
  "seed",
  "service_tier",
  "stop",
  "store",
  "stream",
  "stream_options",
  "temperature",
  "tool_choice",
  "tools",
  "top_logprobs",
  "top_p",
  "user",
  "verbosity",
  "web_search_options",
]; // deno-fmt-ignore
const OPENAI_COMPLETION_FIELDS = [
  "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
  "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
]; // deno-fmt-ignore

/** openai 7.55.0's ResponseCreateParamsBase. */
const OPENAI_RESPONSES_FIELDS = [
  "access_programs", "background", "context_management", "conversation", "image", "include", "input", "instructions",
  "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls", "previous_response_id", "prompt",
  "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
  "stream", "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
]; // deno-fmt-ignore

const ENDPOINTS: { path: string; policy: Policy; base: Record<string, unknown>; openai: string[] }[] = [
  {
    path: "/v1/chat/completions",
    policy: CHAT_POLICY,
    base: { model: MODEL, messages: [{ role: "user", content: "Once upon" }], max_tokens: 1 },
    openai: OPENAI_CHAT_FIELDS,
  },
  { path: "/v1/completions", policy: COMPLETIONS_POLICY, base: { model: MODEL, prompt: "Once upon", max_tokens: 1 }, openai: OPENAI_COMPLETION_FIELDS },
  {
    path: "/v1/responses",
    policy: RESPONSES_POLICY,
    base: { model: MODEL, input: "Once upon", max_output_tokens: 1 },
    openai: OPENAI_RESPONSES_FIELDS,
  },
];

async function withServer(fn: (s: Server, log: Record<string, unknown>[], root: string) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "qlora-policy-" });
  const log: Record<string, unknown>[] = [];
  const s = await storiesServer(root, { chatTemplate: TEMPLATE, log: (e) => log.push(e) });
  try {
    await fn(s, log, root);
  } finally {
    await s.close();
    await Deno.remove(root, { recursive: true });
  }
}

async function error(res: Response, status = 400) {
  const text = await res.text();
  assert.equal(res.status, status, text);
  const e = JSON.parse(text).error;
  assert.equal(e.type, "invalid_request_error");
  return e as { message: string; param: string | null; code: string | null };
}

Deno.test("the policy covers every OpenAI request field of chat, completions and responses", () => {
  for (const { path, policy, openai } of ENDPOINTS) {
    const missing = openai.filter((f) => !(f in policy));
    assert.deepEqual(missing, [], `${path}: OpenAI fields without a decision`);
    const counts = policyCounts(policy);
    assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), Object.keys(policy).length);
  }
});

Deno.test("every unsupported field is a 400 unsupported_parameter naming it; every refused value a 400 unsupported_value", async () => {
  await withServer(async (s) => {
    for (const { path, policy, base } of ENDPOINTS) {
      for (const [field, p] of Object.entries(policy)) {
        if (p.kind === "unsupported") {
          const e = await error(await s.app.request(path, json({ ...base, [field]: p.example })));
          assert.equal(e.param, field, `${path} ${field}: ${e.message}`);
          assert.equal(e.code, "unsupported_parameter", `${path} ${field}`);
          assert.match(e.message, new RegExp(`^${field} is not supported`));
          // null counts as absent
          const ok = await s.app.request(path, json({ ...base, [field]: null }));
          assert.equal(ok.status, 200, `${path} ${field}: null → ${await ok.text()}`);
        }
        if (p.refuse) {
          assert.ok(p.refused !== undefined, `${field} has refuse but no refused example`);
          const req = { ...base, ...(field === "prompt_logprobs" ? { stream: true } : {}), [field]: p.refused };
          const e = await error(await s.app.request(path, json(req)));
          const want = p.refuse(p.refused, req)!;
          assert.equal(e.param, want.param, `${path} ${field}: ${e.message}`);
          assert.ok(e.param!.startsWith(field));
          assert.equal(e.code, "unsupported_value", `${path} ${field}`);
          if (p.example !== undefined) {
            const ok = await s.app.request(path, json({ ...base, [field]: p.example }));
            assert.equal(ok.status, 200, `${path} ${field}: ${JSON.stringify(p.example)} → ${await ok.text()}`);
          }
        }
      }
    }
    // the fields of chat messages
    const chat = ENDPOINTS[0];
    for (const [field, p] of Object.entries(MESSAGE_POLICY)) {
      if (p.kind !== "unsupported") continue;
      const messages = [{ role: "assistant", content: "x", [field]: p.example }];
      const e = await error(await s.app.request(chat.path, json({ ...chat.base, messages })));
      assert.equal(e.param, `messages.0.${field}`, e.message);
      assert.equal(e.code, "unsupported_parameter");
    }
    const parts = [{ type: "text", text: "hi" }, { type: "image_url", image_url: { url: "http://x/y.png" } }];
    const e = await error(await s.app.request(chat.path, json({ ...chat.base, messages: [{ role: "user", content: parts }] })));
    assert.equal(e.param, "messages.0.content.1.type");
    assert.equal(e.code, "unsupported_value");
    const ok = await s.app.request(chat.path, json({ ...chat.base, messages: [{ role: "user", content: [parts[0]] }] }));
    assert.equal(ok.status, 200, await ok.text());
  });
});

Deno.test("caller-describing fields are accepted and recorded in the request's log line", async () => {
  await withServer(async (s, log) => {
    for (const { path, policy, base } of ENDPOINTS) {
      const recorded = Object.entries(policy).filter(([, p]) => p.kind === "recorded");
      assert.ok(recorded.length > 0);
      for (const [field, p] of recorded) {
        log.length = 0;
        const res = await s.app.request(path, json({ ...base, [field]: p.example }));
        const text = await res.text();
        assert.equal(res.status, 200, `${path} ${field}: ${text}`);
        const line = log.find((l) => l.msg === "request" && l.path === path);
        assert.deepEqual((line?.caller as Record<string, unknown>)?.[field], p.example, `${path} ${field}: ${JSON.stringify(line)}`);
      }
      // all together
      const all = Object.fromEntries(recorded.map(([k, p]) => [k, p.example]));
      assert.equal((await s.app.request(path, json({ ...base, ...all }))).status, 200);
    }
  });
});

Deno.test("unknown fields answer OpenAI's 'Unrecognized request argument supplied' on every route with a body", async () => {
  await withServer(async (s, _log, root) => {
    const unknown = async (path: string, body: Record<string, unknown>, param = "frobnicate") => {
      const e = await error(await s.app.request(path, json({ ...body, frobnicate: 1 })));
      assert.equal(e.param, param, `${path}: ${e.message}`);
      assert.equal(e.code, "unknown_parameter", path);
      assert.ok(e.message.startsWith(`Unrecognized request argument supplied: ${param}`), e.message);
    };
    for (const { path, base } of ENDPOINTS) await unknown(path, base);
    const so = await error(
      await s.app.request("/v1/chat/completions", json({ ...ENDPOINTS[0].base, stream_options: { include_usage: true, frobnicate: 1 } })),
    );
    assert.equal(so.param, "stream_options.frobnicate");
    const e = await error(
      await s.app.request(
        "/v1/chat/completions",
        json({ ...ENDPOINTS[0].base, messages: [{ role: "user", content: "x", frobnicate: 1 }] }),
      ),
    );
    assert.equal(e.param, "messages.0.frobnicate");
    assert.match(e.message, /^Unrecognized request argument supplied: messages\.0\.frobnicate/);
    await makeAdapter(`${root}/adapters/one`, STORIES_SHAPE, { seed: 1 });
    await unknown("/v1/adapters", { id: "one", path: "one" });
    await unknown("/v1/load_lora_adapter", { lora_name: "one", lora_path: "one" });
    await unknown("/v1/unload_lora_adapter", { lora_name: "one" });
    await unknown("/tokenize", { model: MODEL, prompt: "x" });
    await unknown("/detokenize", { model: MODEL, tokens: [1] });
    // multipart bodies: an unknown form field
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", new File(['{"prompt": "a", "completion": "b"}\n'], "t.jsonl"));
    form.append("frobnicate", "1");
    const f = await error(await s.app.request("/v1/files", { method: "POST", body: form }));
    assert.equal(f.param, "frobnicate");
    const ft = await error(await s.app.request("/v1/fine_tuning/jobs", json({ model: MODEL, training_file: "file-x", frobnicate: 1 })));
    assert.equal(ft.param, "frobnicate");
    assert.ok(ft.message.startsWith("Unrecognized request argument supplied: frobnicate"));
  });
});
