import { delay } from 'abort-controller-x';
import type { Task, Transition } from '../../gen/dsat/task/v1/task';
import type { Logger } from '../shared/logger';
import type { TaskTimers } from './timers';

/** One page of unfinished tasks, with the store's revision when it was read. */
export interface UnfinishedPage {
  readonly tasks: Task[];
  readonly nextPageToken: string;
  readonly revision: number;
  /** The store's wall clock when the page was read, if it says (its records' clock). */
  readonly readAtMs?: number;
}

/** One message of the feed: transitions in revision order, and the revision seen up to. */
export interface FeedBatch {
  readonly transitions: Transition[];
  readonly revision: number;
}

/** The status service as the tracker reads it: `ListUnfinishedTasks` and `WatchEvents`. */
export interface FeedSource {
  listUnfinished(pageToken: string, signal: AbortSignal): Promise<UnfinishedPage>;
  /** The feed after `fromRevision`; ends or throws when the stream breaks. */
  watch(fromRevision: number, signal: AbortSignal): AsyncIterable<FeedBatch>;
}

/** Tells a feed gap (the resume point fell out of the feed's window) from other failures. */
export type IsFeedGap = (err: unknown) => boolean;

export interface FeedFollowerOptions {
  readonly source: FeedSource;
  readonly timers: TaskTimers;
  readonly signal: AbortSignal;
  readonly logger?: Logger;
  readonly isFeedGap?: IsFeedGap;
  /** Longest wait between two tries to reach the store. Default 5 s. */
  readonly maxBackoffMs?: number;
  /** Called after the timers were re-armed from the store (start-up, or after a gap). */
  readonly onRestored?: (revision: number, tasks: number) => void;
}

export interface FeedFollower {
  /** The last revision folded into the timers; 0 before the first re-arm. */
  readonly revision: number;
  /** True once the timers were re-armed from the store and the feed is followed. */
  readonly restored: boolean;
  /** Resolves when the signal aborted and the loop ended. */
  readonly done: Promise<void>;
}

/**
 * Keeps the timers in step with the store: re-arms from `ListUnfinishedTasks` (every page, the
 * feed then resumed from the FIRST page's revision, so nothing committed while the pages were
 * read is missed; the timers skip what the records already hold), then follows `WatchEvents` from
 * the last revision it folded in, reconnecting with capped backoff when the stream breaks. A gap
 * in the feed (OUT_OF_RANGE) re-arms from the records again.
 */
export function followFeed(options: FeedFollowerOptions): FeedFollower {
  const { source, timers, signal, logger } = options;
  const maxBackoff = options.maxBackoffMs ?? 5_000;
  const isGap = options.isFeedGap ?? (() => false);
  let revision = 0;
  let restored = false;

  const restore = async () => {
    timers.reset();
    let token = '';
    let first: number | undefined;
    let last = 0;
    let count = 0;
    do {
      const page = await source.listUnfinished(token, signal);
      first ??= page.revision;
      last = Math.max(last, page.revision);
      await timers.prepareRestore(page.tasks);
      timers.restore(page.tasks, last, page.readAtMs);
      count += page.tasks.length;
      token = page.nextPageToken;
    } while (token !== '');
    revision = first ?? 0;
    restored = true;
    logger?.info({ revision, tasks: count, armed: timers.size }, 'timers re-armed from the store');
    options.onRestored?.(revision, count);
  };

  const follow = async () => {
    for await (const batch of source.watch(revision, signal)) {
      if (batch.transitions.length > 0) {
        await timers.prepare(batch.transitions);
        timers.apply(batch.transitions);
      }
      revision = Math.max(revision, batch.revision);
      timers.observeRevision(revision);
      backoff = 100;
      warned = false;
    }
  };

  let backoff = 100;
  let warned = false;
  const loop = async () => {
    let needRestore = true;
    while (!signal.aborted) {
      try {
        if (needRestore) await restore();
        needRestore = false;
        await follow();
      } catch (err) {
        if (signal.aborted) break;
        if (isGap(err)) {
          logger?.warn(
            { revision },
            'the feed no longer holds our revision: re-arming from records',
          );
          needRestore = true;
          restored = false;
        } else if (!warned) {
          logger?.warn({ err }, 'the status feed is unreachable; trying again');
          warned = true;
        }
      }
      if (signal.aborted) break;
      await delay(signal, backoff).catch(() => undefined);
      backoff = Math.min(maxBackoff, backoff * 2);
    }
  };

  const done = loop();
  return {
    get revision() {
      return revision;
    },
    get restored() {
      return restored;
    },
    done,
  };
}
