// completions.ts — client.completions.create: POST /completions (OpenAI's legacy text
// completions). With `stream: true` it resolves to a Stream of text_completion chunks.
import type { APIPromise, RequestOptions } from "../core.ts";
import { APIResource } from "../resource.ts";
import type { Stream } from "../streaming.ts";
import type {
  Completion,
  CompletionChunk,
  CompletionCreateParams,
  CompletionCreateParamsNonStreaming,
  CompletionCreateParamsStreaming,
} from "../types.ts";

export class Completions extends APIResource {
  /** Creates a completion for a prompt; `model` is the base model's id or an adapter id. */
  create(
    body: CompletionCreateParamsNonStreaming,
    options?: RequestOptions,
  ): APIPromise<Completion>;
  create(
    body: CompletionCreateParamsStreaming,
    options?: RequestOptions,
  ): APIPromise<Stream<CompletionChunk>>;
  create(
    body: CompletionCreateParams,
    options?: RequestOptions,
  ): APIPromise<Completion | Stream<CompletionChunk>>;
  create(
    body: CompletionCreateParams,
    options?: RequestOptions,
  ): APIPromise<Completion | Stream<CompletionChunk>> {
    return this._client.post("/completions", {
      ...options,
      body,
      stream: body.stream === true,
    });
  }
}
