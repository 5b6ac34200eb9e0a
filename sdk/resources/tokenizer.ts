// tokenizer.ts — client.tokenizer: vLLM's POST /tokenize and POST /detokenize, and GET /version.
// They sit beside /v1, not under it: the paths climb one level from the client's baseURL
// (".../v1" → "..."; a baseURL without /v1 stays at its root).
import type { APIPromise, RequestOptions } from "../core.ts";
import { APIResource } from "../resource.ts";
import type { DetokenizeParams, DetokenizeResponse, ServerVersion, TokenizeParams, TokenizeResponse } from "../types.ts";

export class Tokenizer extends APIResource {
  /** A prompt's (or chat messages') token ids, per model or adapter id. */
  tokenize(body: TokenizeParams, options?: RequestOptions): APIPromise<TokenizeResponse> {
    return this._client.post("/../tokenize", { ...options, body });
  }

  /** Token ids back to text. */
  detokenize(body: DetokenizeParams, options?: RequestOptions): APIPromise<DetokenizeResponse> {
    return this._client.post("/../detokenize", { ...options, body });
  }

  /** The server's version. */
  version(options?: RequestOptions): APIPromise<ServerVersion> {
    return this._client.get("/../version", options);
  }
}
