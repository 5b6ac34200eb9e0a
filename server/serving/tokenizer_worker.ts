// tokenizer_worker.ts — one tokenizer pool worker (tokenizer_pool.ts): loads the model's tokenizer,
// then renders chat templates and encodes text, one job at a time, off the HTTP thread.
import { type ChatMessage, ChatTemplateError, renderChatTemplate } from "../model/chat_template.ts";
import { Tokenizer } from "../model/tokenizer.ts";

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
  };

export type TokenizeReply =
  | { t: "ready" }
  | { t: "init_error"; message: string }
  | { t: "ids"; ids: number[] }
  | { t: "error"; kind: "chat_template" | "tokenizer"; message: string };

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: TokenizeReply): void;
};

let tok: Tokenizer | null = null;

function run(job: TokenizeJob, t: Tokenizer): number[] {
  if (job.t === "encode") return t.encode(job.text, { addSpecialTokens: job.addSpecialTokens });
  const text = renderChatTemplate(job.template, job.messages, {
    addGenerationPrompt: job.addGenerationPrompt,
    bosToken: t.bosToken,
    eosToken: t.eosToken,
    extra: job.extra,
  });
  return t.encode(text, { addSpecialTokens: job.addSpecialTokens });
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
    self.postMessage({ t: "ids", ids: run(m, tok!) });
  } catch (err) {
    self.postMessage({
      t: "error",
      kind: err instanceof ChatTemplateError ? "chat_template" : "tokenizer",
      message: (err as Error).message,
    });
  }
};
