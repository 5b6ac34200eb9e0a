// chat.ts — client.chat.completions.create: POST /chat/completions. With `stream: true` it
// resolves to a Stream of chat.completion.chunk objects, otherwise to the chat.completion (the
// overloads make the type follow the literal).
import type { APIPromise, RequestOptions } from "../core.ts";
import { APIResource } from "../resource.ts";
import type { Stream } from "../streaming.ts";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParams,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
} from "../types.ts";

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
}

export class Chat extends APIResource {
  readonly completions: ChatCompletions = new ChatCompletions(this._client);
}
