// chat.ts — client.chat.completions.create: POST /chat/completions. With `stream: true` it
// resolves to a Stream of chat.completion.chunk objects, otherwise to the chat.completion (the
// overloads make the type follow the literal). client.chat.completions.parse: the same with a
// schema object (zod 4, or anything with parse() and toJSONSchema()) as response_format, the
// output parsed and checked by it (as openai-node's parse with zodResponseFormat).
import type { APIPromise, RequestOptions } from "../core.ts";
import { APIResource } from "../resource.ts";
import type { Stream } from "../streaming.ts";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParams,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
  ResponseFormat,
} from "../types.ts";

/** A schema the SDK can send and check with: zod 4's schemas fit (no zod dependency here). */
export interface SchemaLike<T> {
  parse(value: unknown): T;
  toJSONSchema(params?: unknown): unknown;
}

/** A json_schema response format that also knows how to parse the output (its parser is not
 * enumerable, so it is not sent). */
export type ParseableResponseFormat<T> = Extract<ResponseFormat, { type: "json_schema" }> & { readonly __parse: (content: string) => T };

/** response_format for `parse`: the schema as JSON schema (strict), named `name`. */
export function schemaResponseFormat<T>(schema: SchemaLike<T>, name: string): ParseableResponseFormat<T> {
  const json = schema.toJSONSchema() as Record<string, unknown>;
  const format = { type: "json_schema" as const, json_schema: { name, schema: json, strict: true } };
  Object.defineProperty(format, "__parse", { value: (content: string) => schema.parse(JSON.parse(content)), enumerable: false });
  return format as ParseableResponseFormat<T>;
}

/** A chat completion whose choices carry `message.parsed` (null when the choice was cut short). */
export type ParsedChatCompletion<T> = ChatCompletion & {
  choices: (ChatCompletion["choices"][number] & { message: ChatCompletion["choices"][number]["message"] & { parsed: T | null } })[];
};

export class ChatCompletions extends APIResource {
  /**
   * Creates a model response for a conversation. `model` is the base model's id or an adapter id
   * (the adapter is applied to this request only).
   */
  create(
    body: ChatCompletionCreateParamsNonStreaming,
    options?: RequestOptions,
  ): APIPromise<ChatCompletion>;
  create(
    body: ChatCompletionCreateParamsStreaming,
    options?: RequestOptions,
  ): APIPromise<Stream<ChatCompletionChunk>>;
  create(
    body: ChatCompletionCreateParams,
    options?: RequestOptions,
  ): APIPromise<ChatCompletion | Stream<ChatCompletionChunk>>;
  create(
    body: ChatCompletionCreateParams,
    options?: RequestOptions,
  ): APIPromise<ChatCompletion | Stream<ChatCompletionChunk>> {
    return this._client.post("/chat/completions", {
      ...options,
      body,
      stream: body.stream === true,
    });
  }

  /**
   * Creates a chat completion whose output follows a schema: `response_format` takes a schema
   * object (e.g. a zod 4 schema; named `schemaName`, default "response") or schemaResponseFormat's
   * result. The server constrains the output to the schema; each choice's `message.parsed` is the
   * output parsed and checked by the schema (null when the choice ended by length).
   */
  async parse<T>(
    body: Omit<ChatCompletionCreateParamsNonStreaming, "response_format" | "stream"> & {
      response_format: SchemaLike<T> | ParseableResponseFormat<T>;
      schemaName?: string;
    },
    options?: RequestOptions,
  ): Promise<ParsedChatCompletion<T>> {
    const { response_format: rf, schemaName, ...rest } = body;
    const format = "__parse" in rf ? rf : schemaResponseFormat(rf as SchemaLike<T>, schemaName ?? "response");
    const out = await this.create({ ...rest, response_format: format, stream: false }, options);
    return {
      ...out,
      choices: out.choices.map((c) => ({
        ...c,
        message: {
          ...c.message,
          parsed: c.finish_reason === "length" || c.message.content === null ? null : format.__parse(c.message.content),
        },
      })),
    };
  }
}

export class Chat extends APIResource {
  readonly completions: ChatCompletions = new ChatCompletions(this._client);
}
