// tokenizer_worker.ts — one tokenizer pool worker (tokenizer_pool.ts): loads the model's tokenizer,
// then renders chat templates, encodes text and validates uploaded JSONL, one job at a time, off
// the HTTP thread.
import { type ChatMessage, ChatTemplateError, renderChatTemplate } from "../model/chat_template.ts";
import { Tokenizer } from "../model/tokenizer.ts";
import { DatasetError, type Example, parseJsonl } from "../training/dataset.ts";

export type TokenizeJob =
  | { t: "encode"; text: string; addSpecialTokens: boolean }
  /** Renders `template` over the messages (with the tokenizer's bos/eos tokens), then encodes the
   * text; `extra` reaches the template as variables (tools, …). */
  | {
    t: "chat";
    template: string;
    messages: ChatMessage[];
    addGenerationPrompt: boolean;
    addSpecialTokens: boolean;
    extra?: Record<string, unknown>;
  }
  /** Checks a fine-tuning file (training/dataset.ts's parser): its example count and formats. */
  | { t: "jsonl"; text: string; maxExamples: number };

export interface JsonlSummary {
  examples: number;
  kinds: Example["kind"][];
}

export type TokenizeReply =
  | { t: "ready" }
  | { t: "init_error"; message: string }
  | { t: "ids"; ids: number[] }
  | { t: "jsonl"; summary: JsonlSummary }
  | { t: "error"; kind: "chat_template" | "dataset" | "tokenizer"; message: string };

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: TokenizeReply): void;
};

let tok: Tokenizer | null = null;

function run(job: TokenizeJob, t: Tokenizer): TokenizeReply {
  if (job.t === "encode") return { t: "ids", ids: t.encode(job.text, { addSpecialTokens: job.addSpecialTokens }) };
  if (job.t === "jsonl") {
    const parsed = parseJsonl(job.text, { maxExamples: job.maxExamples });
    return { t: "jsonl", summary: { examples: parsed.length, kinds: [...new Set(parsed.map((e) => e.kind))].sort() } };
  }
  const text = renderChatTemplate(job.template, job.messages, {
    addGenerationPrompt: job.addGenerationPrompt,
    bosToken: t.bosToken,
    eosToken: t.eosToken,
    extra: job.extra,
  });
  return { t: "ids", ids: t.encode(text, { addSpecialTokens: job.addSpecialTokens }) };
}

self.onmessage = async (e: MessageEvent<TokenizeJob | { t: "init"; modelDir: string }>) => {
  const m = e.data;
  if (m.t === "init") {
    try {
      tok = await Tokenizer.load(m.modelDir);
      self.postMessage({ t: "ready" });
    } catch (err) {
      self.postMessage({ t: "init_error", message: (err as Error).message });
    }
    return;
  }
  try {
    self.postMessage(run(m, tok!));
  } catch (err) {
    const kind = err instanceof ChatTemplateError ? "chat_template" : err instanceof DatasetError ? "dataset" : "tokenizer";
    self.postMessage({ t: "error", kind, message: (err as Error).message });
  }
};
