// resource.ts — the base of every resource class: a handle on the client that sends requests.
import type { QloraClient } from "./client.ts";

export class APIResource {
  protected readonly _client: QloraClient;
  constructor(client: QloraClient) {
    this._client = client;
  }
}
