// chat_template.ts — render a model's Jinja chat template (tokenizer_config.json "chat_template"
// or chat_template.jinja) with @huggingface/jinja, as transformers' apply_chat_template does.
import { Template } from "@huggingface/jinja";
import type { Tokenizer } from "./tokenizer.ts";

export interface ChatMessage {
  role: string;
  content: string | null | Array<{ type: string; text?: string; [k: string]: unknown }>;
  [k: string]: unknown;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  bosToken?: string | null;
  eosToken?: string | null;
  /** Extra variables (tools, documents, date_string, …). */
  extra?: Record<string, unknown>;
}

export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChatTemplateError";
  }
}

const cache = new Map<string, Template>();

function compile(source: string): Template {
  let t = cache.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`chat template does not parse: ${(e as Error).message}`);
    }
    if (cache.size > 32) cache.clear();
    cache.set(source, t);
  }
  return t;
}

/** An assistant's tool call as templates read it: Hugging Face templates write
 * `tool_call.function.arguments | tojson` (or iterate it), so the JSON text becomes an object, as
 * vLLM does; text that is not JSON stays as it is. */
export function templateToolCall<T extends { function: { name: string; arguments: string } }>(c: T) {
  let args: unknown = c.function.arguments;
  try {
    args = JSON.parse(c.function.arguments);
  } catch { /* not JSON: the template gets the text */ }
  return { ...c, function: { ...c.function, arguments: args } };
}

/** Whether a template renders tool definitions and assistants' tool calls (it reads `tools` and
 * `tool_calls`): a conversation with tools must not be rendered by one that drops them. */
export function templateRendersTools(template: string | null | undefined): boolean {
  return !!template && /\btools\b/.test(template) && /\btool_calls\b/.test(template);
}

/** Renders `template` (null → a clear error: the model has no chat template). */
export function renderChatTemplate(template: string | null | undefined, messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
  if (!template) {
    throw new ChatTemplateError("this model has no chat template (it is a base model): use the completions endpoint");
  }
  const t = compile(template);
  try {
    return t.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      bos_token: opts.bosToken ?? "",
      eos_token: opts.eosToken ?? "",
      ...opts.extra,
    });
  } catch (e) {
    if (e instanceof ChatTemplateError) throw e;
    throw new ChatTemplateError(`chat template failed to render: ${(e as Error).message}`);
  }
}

/**
 * Renders the tokenizer's chat template (bos/eos tokens filled in) and tokenizes the result
 * without adding special tokens again (the template already wrote BOS where it wants one).
 * `templateName` picks a named template (tokenizer_config's list form), default "default".
 */
export function applyChatTemplate(
  tok: Pick<Tokenizer, "chatTemplate" | "chatTemplates" | "bosToken" | "eosToken" | "encode">,
  messages: ChatMessage[],
  opts: Omit<ChatTemplateOptions, "bosToken" | "eosToken"> & { templateName?: string } = {},
): { text: string; ids: number[] } {
  const template = opts.templateName ? tok.chatTemplates[opts.templateName] : tok.chatTemplate;
  if (opts.templateName && !template) throw new ChatTemplateError(`this model has no chat template named "${opts.templateName}"`);
  const text = renderChatTemplate(template, messages, { ...opts, bosToken: tok.bosToken, eosToken: tok.eosToken });
  return { text, ids: tok.encode(text, { addSpecialTokens: false }) };
}
