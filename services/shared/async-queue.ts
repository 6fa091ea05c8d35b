/**
 * An unbounded queue that one consumer reads as an async iterator: the outbox of a server stream.
 * Producers push synchronously; `end()` finishes the iteration after what is queued, `fail(err)`
 * makes it throw at once. Bounds are the producers' business (credit, pending limits).
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private failWaiter: ((err: unknown) => void) | undefined;
  private ended = false;
  private error: { err: unknown } | undefined;

  get size(): number {
    return this.items.length - this.head;
  }

  get closed(): boolean {
    return this.ended || this.error !== undefined;
  }

  push(item: T): void {
    if (this.closed) return;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      this.failWaiter = undefined;
      w({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  end(): void {
    if (this.closed) return;
    this.ended = true;
    if (this.waiter && this.size === 0) {
      const w = this.waiter;
      this.waiter = undefined;
      this.failWaiter = undefined;
      w({ value: undefined, done: true });
    }
  }

  fail(err: unknown): void {
    if (this.error) return;
    this.error = { err };
    const f = this.failWaiter;
    this.waiter = undefined;
    this.failWaiter = undefined;
    f?.(err);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.error) return Promise.reject(this.error.err);
    if (this.size > 0) {
      const value = this.items[this.head]!;
      this.items[this.head++] = undefined as T;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}
