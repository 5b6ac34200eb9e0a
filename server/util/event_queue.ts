// event_queue.ts — a push-driven stream as an async iterator: a producer pushes items (and ends
// or fails the queue) from callbacks; one consumer awaits them in order. The engine (step loop →
// request) and the engine host (worker messages → request) both hand events over this way.

export class EventQueue<T> {
  readonly #items: T[] = [];
  #wake: (() => void) | null = null;
  #ended = false;
  #error: Error | null = null;

  /** True once end() or fail() was called (items may still be waiting to be read). */
  get ended(): boolean {
    return this.#ended;
  }

  push(item: T): void {
    if (this.#ended) return;
    this.#items.push(item);
    this.#signal();
  }

  /** No more items: the consumer reads what is queued, then its iteration ends. */
  end(): void {
    this.#ended = true;
    this.#signal();
  }

  /** The consumer reads what is queued, then `error` is thrown to it. */
  fail(error: Error): void {
    if (this.#ended) return;
    this.#error = error;
    this.#ended = true;
    this.#signal();
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** The items in order until the queue ends (or fails). Leaving the loop early does not end the
   * queue: the producer's owner decides what an abandoned consumer means (see the callers). */
  async *drain(): AsyncGenerator<T> {
    while (true) {
      if (this.#items.length > 0) {
        yield this.#items.shift()!;
        continue;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }
}
