/** What the ready queue needs of an entry: its priority, and a flag it sets when it leaves. */
export interface Queueable {
  readonly priority: number;
  /** Set by the queue: true while the entry waits in it. */
  queued: boolean;
}

/** A FIFO of one priority: an array with a moving head, compacted now and then. */
class Fifo<T> {
  items: (T | undefined)[] = [];
  head = 0;

  push(item: T) {
    this.items.push(item);
  }

  shift(): T | undefined {
    while (this.head < this.items.length) {
      const item = this.items[this.head];
      this.items[this.head++] = undefined;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      if (item !== undefined) return item;
    }
    return undefined;
  }

  get empty() {
    return this.head >= this.items.length;
  }
}

/**
 * The ready queue of one stage: highest priority first, then first in, first out. Removing an
 * entry (a cancel) is O(1): it is marked and skipped when it reaches the head.
 */
export class ReadyQueue<T extends Queueable> {
  private readonly byPriority = new Map<number, Fifo<T>>();
  /** Priorities that have a FIFO, highest first. Almost always just [0]. */
  private priorities: number[] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  push(entry: T): void {
    let fifo = this.byPriority.get(entry.priority);
    if (fifo === undefined) {
      fifo = new Fifo<T>();
      this.byPriority.set(entry.priority, fifo);
      this.priorities.push(entry.priority);
      this.priorities.sort((a, b) => b - a);
    }
    fifo.push(entry);
    entry.queued = true;
    this.count++;
  }

  /** The next entry to run, removed from the queue; undefined when the queue is empty. */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    for (const p of this.priorities) {
      const fifo = this.byPriority.get(p)!;
      for (;;) {
        const entry = fifo.shift();
        if (entry === undefined) break;
        if (!entry.queued) continue;
        entry.queued = false;
        if (--this.count === 0) this.reset();
        return entry;
      }
    }
    return undefined;
  }

  /** Takes an entry out wherever it is. False when it was not queued. */
  remove(entry: T): boolean {
    if (!entry.queued) return false;
    entry.queued = false;
    this.count--;
    if (this.count === 0) this.reset();
    return true;
  }

  private reset() {
    this.byPriority.clear();
    this.priorities = [];
  }
}
