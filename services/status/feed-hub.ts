import type { Transition } from '../../gen/dsat/task/v1/task';
import type { FeedEntry } from './store-codec';
import { toTransition } from './task-log';

/** One durable commit, handed to watchers after its batch is synced. */
export interface PublishedCommit {
  readonly first: number;
  readonly last: number;
  readonly entries: readonly FeedEntry[];
}

/**
 * A watcher's bounded inbox. When a slow watcher's inbox would pass its capacity, the inbox is
 * emptied and marked overflowed: the watcher then reads what it missed from the store, so
 * memory stays bounded however slow it is, and nothing is skipped.
 */
export class Inbox<T> {
  private items: T[] = [];
  private weight = 0;
  private wake: (() => void) | undefined;
  overflowed = false;
  /** The last revision published while subscribed, matched or not. */
  seen = 0;
  closedWith: Error | undefined;
  private wokeAt = 0;

  /**
   * @param progressEvery wake the watcher after this many revisions with nothing for it, so it
   *   can tell its client how far it has seen (Infinity: never).
   */
  constructor(
    private readonly capacity: number,
    private readonly progressEvery = Number.POSITIVE_INFINITY,
  ) {}

  push(item: T, weight: number, revision: number): void {
    this.seen = revision;
    if (!this.overflowed) {
      if (this.weight + weight > this.capacity) {
        this.items = [];
        this.weight = 0;
        this.overflowed = true;
      } else {
        this.items.push(item);
        this.weight += weight;
      }
    }
    this.notify();
  }

  /** A commit with nothing for this watcher still moves its resume point. */
  skip(revision: number): void {
    this.seen = revision;
    if (revision - this.wokeAt >= this.progressEvery) this.notify();
  }

  take(): T[] {
    const items = this.items;
    this.items = [];
    this.weight = 0;
    return items;
  }

  /** Drops what is buffered; the caller re-reads from the store from its cursor. */
  resetOverflow(): void {
    this.items = [];
    this.weight = 0;
    this.overflowed = false;
  }

  get empty(): boolean {
    return this.items.length === 0;
  }

  close(err: Error): void {
    this.closedWith = err;
    this.notify();
  }

  /** Resolves when something arrives, the inbox closes, or `signal` aborts. */
  wait(signal: AbortSignal | undefined): Promise<void> {
    if (!this.empty || this.overflowed || this.closedWith !== undefined || signal?.aborted) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const done = (): void => {
        signal?.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private notify(): void {
    this.wokeAt = this.seen;
    const wake = this.wake;
    if (wake !== undefined) wake();
  }
}

export interface EventBatch {
  readonly transitions: Transition[];
  readonly revision: number;
}

export interface EventSubscription {
  readonly inbox: Inbox<EventBatch>;
  readonly match: (entry: FeedEntry) => boolean;
}

/** Fans each durable commit out to event watchers and to the watchers of the tasks it moved. */
export class FeedHub {
  private readonly events = new Set<EventSubscription>();
  private readonly tasks = new Map<string, Set<Inbox<Transition>>>();

  get watcherCount(): number {
    let n = this.events.size;
    for (const subs of this.tasks.values()) n += subs.size;
    return n;
  }

  subscribeEvents(
    match: (entry: FeedEntry) => boolean,
    capacity: number,
    progressEvery: number,
  ): EventSubscription {
    const sub = { inbox: new Inbox<EventBatch>(capacity, progressEvery), match };
    this.events.add(sub);
    return sub;
  }

  unsubscribeEvents(sub: EventSubscription): void {
    this.events.delete(sub);
  }

  subscribeTask(taskId: string, capacity: number): Inbox<Transition> {
    const inbox = new Inbox<Transition>(capacity);
    let subs = this.tasks.get(taskId);
    if (subs === undefined) this.tasks.set(taskId, (subs = new Set()));
    subs.add(inbox);
    return inbox;
  }

  unsubscribeTask(taskId: string, inbox: Inbox<Transition>): void {
    const subs = this.tasks.get(taskId);
    if (subs === undefined) return;
    subs.delete(inbox);
    if (subs.size === 0) this.tasks.delete(taskId);
  }

  publish(commit: PublishedCommit): void {
    if (this.events.size === 0 && this.tasks.size === 0) return;
    // Transitions are built once per commit, and only for entries someone receives; a commit's
    // transitions share its time, so they share one Date.
    const built = new Map<FeedEntry, Transition>();
    const at = new Date(commit.entries[0]?.entry.atMs ?? 0);
    const transition = (f: FeedEntry): Transition => {
      let t = built.get(f);
      if (t === undefined) built.set(f, (t = toTransition(f, f.entry, at)));
      return t;
    };
    for (const sub of this.events) {
      const matched: Transition[] = [];
      for (const f of commit.entries) if (sub.match(f)) matched.push(transition(f));
      if (matched.length === 0) sub.inbox.skip(commit.last);
      else
        sub.inbox.push(
          { transitions: matched, revision: commit.last },
          matched.length,
          commit.last,
        );
    }
    if (this.tasks.size === 0) return;
    for (const f of commit.entries) {
      const subs = this.tasks.get(f.taskId);
      if (subs === undefined) continue;
      for (const inbox of subs) inbox.push(transition(f), 1, f.entry.revision);
    }
  }

  closeAll(err: Error): void {
    for (const sub of this.events) sub.inbox.close(err);
    for (const subs of this.tasks.values()) for (const inbox of subs) inbox.close(err);
  }
}
