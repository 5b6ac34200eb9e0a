// responses.ts — client.responses.create / client.responses.stream: POST /responses (OpenAI's
// Responses API; the server is stateless: store is false, previous_response_id is refused). With
// `stream: true` (or `stream(...)`) it resolves to a Stream of the Responses events
// (response.created … response.output_text.delta … response.completed / response.incomplete).
import type { APIPromise, RequestOptions } from "../core.ts";
import { APIResource } from "../resource.ts";
import type { Stream } from "../streaming.ts";
import type {
  Response,
  ResponseCreateParams,
  ResponseCreateParamsNonStreaming,
  ResponseCreateParamsStreaming,
  ResponseStreamEvent,
} from "../types.ts";

export class Responses extends APIResource {
  /**
   * Creates a model response. `input` is a string or items (messages, function_call and
   * function_call_output items); `model` is the base model's id or an adapter id.
   */
  create(body: ResponseCreateParamsNonStreaming, options?: RequestOptions): APIPromise<Response>;
  create(body: ResponseCreateParamsStreaming, options?: RequestOptions): APIPromise<Stream<ResponseStreamEvent>>;
  create(body: ResponseCreateParams, options?: RequestOptions): APIPromise<Response | Stream<ResponseStreamEvent>>;
  create(body: ResponseCreateParams, options?: RequestOptions): APIPromise<Response | Stream<ResponseStreamEvent>> {
    return this._client.post("/responses", { ...options, body, stream: body.stream === true });
  }

  /** create with `stream: true`: the Responses events as they come. */
  stream(body: Omit<ResponseCreateParams, "stream">, options?: RequestOptions): APIPromise<Stream<ResponseStreamEvent>> {
    return this.create({ ...body, stream: true }, options);
  }
}

/** The text of a response's message items (openai-node's `response.output_text`). */
export function outputText(response: Response): string {
  return response.output.flatMap((item) => item.type === "message" ? item.content.map((p) => p.text) : []).join("");
}
