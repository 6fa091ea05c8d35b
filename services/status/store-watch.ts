import type { WatchEventsResponse, WatchTaskResponse } from '../../gen/dsat/status/v1/status';
import type { Task, TaskFilter, Transition } from '../../gen/dsat/task/v1/task';
import { DsatError, invalidArgument, notFound } from '../shared/errors';
import type { EventBatch, FeedHub } from './feed-hub';
import {
  FEED,
  decodeSegment,
  parseSegmentKey,
  prefixEnd,
  segmentSeekKey,
  type FeedEntry,
} from './store-codec';
import type { StatusLevel } from './store-open';
import { fittingEnd, transitionCeiling } from './reply-size';
import type { TransitionProjection } from './transition-mask';
import { compileFilter, type CompiledFilter } from './task-filter';
import { toTransition, type TaskSlot } from './task-log';
import { isTerminalState } from './task-state-machine';
import { checkTaskId } from '../shared/task-id';

/*
 * Watches: a snapshot or a replay from the store, then live commits from the hub. A watcher
 * subscribes BEFORE it reads the store, so every commit after the read is in its inbox (no gap),
 * and it skips revisions it has already sent (no duplicate). Inboxes are bounded: a watcher that
 * falls behind drops its inbox and reads the store again from where it is.
 */

/** What a watch needs from the store. */
export interface WatchSource {
  readonly hub: FeedHub;
  readonly db: StatusLevel;
  /** The most transitions buffered for one watcher. */
  readonly bufferSize: number;
  /** The bytes of transitions one message may carry (reply-size.ts). */
  readonly replyBudget: number;
  /** An event watcher that receives nothing is told its revision every this many revisions. */
  readonly progressEvery: number;
  revision(): number;
  feedStart(): number;
  readSlot(taskId: string): Promise<TaskSlot | undefined>;
  /** The record as GetTask gives it: with each branch's current state. */
  snapshot(task: Task): Promise<Task>;
  matches(f: CompiledFilter, fe: FeedEntry): boolean;
  assertOpen(): void;
}

/**
 * The task's record (when fromRevision is 0), then each of its transitions after the record or
 * after fromRevision, live, ending after a terminal state. The replay comes from the task's own
 * log (in memory while it lives, in its record once it ended), not from a scan of the feed.
 */
export async function* watchTask(
  src: WatchSource,
  taskId: string,
  fromRevision: number,
  signal?: AbortSignal,
): AsyncGenerator<WatchTaskResponse> {
  checkTaskId(taskId);
  checkResume(src, fromRevision);
  const inbox = src.hub.subscribeTask(taskId, src.bufferSize);
  try {
    let replay = await src.readSlot(taskId);
    if (replay === undefined) throw notFound('task', taskId, 'task_id');
    let cursor = fromRevision;
    if (fromRevision === 0) {
      yield { event: { $case: 'snapshot', value: await src.snapshot(replay.task) } };
      cursor = replay.task.revision;
    }
    for (;;) {
      if (isAborted(signal)) return;
      if (inbox.closedWith !== undefined) throw inbox.closedWith;
      if (replay === undefined && inbox.overflowed) {
        inbox.resetOverflow();
        replay = await src.readSlot(taskId);
        if (replay === undefined) return; // deleted
      }
      if (replay !== undefined) {
        for (const e of replay.log) {
          if (e.revision <= cursor) continue;
          yield { event: { $case: 'transition', value: toTransition(replay.task, e) } };
          cursor = e.revision;
          if (isTerminalState(e.to)) return;
        }
        if (isTerminalState(replay.task.state) && cursor >= replay.task.revision) return;
        replay = undefined;
        continue;
      }
      for (const t of inbox.take()) {
        if (t.revision <= cursor) continue;
        yield { event: { $case: 'transition', value: t } };
        cursor = t.revision;
        if (isTerminalState(t.toState)) return;
      }
      if (inbox.empty && !inbox.overflowed) await inbox.wait(signal);
    }
  } finally {
    src.hub.unsubscribeTask(taskId, inbox);
  }
}

/**
 * The global feed after fromRevision (0 = from now), filtered, in revision order: stored segments
 * first, then live commits, one message per commit (or per ~1000 stored transitions). `project`
 * (a transition_mask) picks the fields sent, before the messages are sized.
 */
export async function* watchEvents(
  src: WatchSource,
  filter: TaskFilter | undefined,
  fromRevision: number,
  signal?: AbortSignal,
  skipTransitionIdPrefix = '',
  project?: TransitionProjection,
): AsyncGenerator<WatchEventsResponse> {
  const f = compileFilter(filter);
  const view = (ts: Transition[]) => (project ? ts.map(project) : ts);
  checkResume(src, fromRevision);
  const match = (fe: FeedEntry): boolean =>
    (skipTransitionIdPrefix === '' || !fe.entry.transitionId.startsWith(skipTransitionIdPrefix)) &&
    src.matches(f, fe);
  const sub = src.hub.subscribeEvents(match, src.bufferSize, src.progressEvery);
  const inbox = sub.inbox;
  let cursor = fromRevision === 0 ? src.revision() : fromRevision;
  let told = cursor;
  let fromStore = cursor < src.revision();
  try {
    for (;;) {
      if (isAborted(signal)) return;
      if (inbox.closedWith !== undefined) throw inbox.closedWith;
      if (fromStore || inbox.overflowed) {
        inbox.resetOverflow();
        fromStore = false;
        for await (const batch of readFeed(src.db, cursor, src.feedStart(), match)) {
          if (isAborted(signal)) return;
          cursor = batch.revision;
          if (batch.transitions.length > 0 || cursor - told >= src.progressEvery) {
            for (const m of messages(view(batch.transitions), cursor, src.replyBudget)) yield m;
            told = cursor;
          }
        }
        continue;
      }
      for (const b of inbox.take()) {
        if (b.revision <= cursor) continue;
        const first = b.transitions[0];
        const fresh =
          first !== undefined && first.revision > cursor
            ? b.transitions
            : b.transitions.filter((t) => t.revision > cursor);
        cursor = b.revision;
        if (fresh.length > 0) {
          for (const m of messages(view(fresh), cursor, src.replyBudget)) yield m;
          told = cursor;
        }
      }
      if (inbox.empty && !inbox.overflowed && inbox.seen > cursor) {
        cursor = inbox.seen; // commits with nothing for this filter
        if (cursor - told >= src.progressEvery) {
          yield { transitions: [], revision: cursor };
          told = cursor;
        }
      }
      if (inbox.empty && !inbox.overflowed) await inbox.wait(signal);
    }
  } finally {
    src.hub.unsubscribeEvents(sub);
  }
}

/**
 * One batch as messages under the byte budget (by transitionCeiling, never by encoding), usually
 * one. A message cut short says the revision of its last transition, a resume point inside the commit;
 * the last says the batch's.
 */
function messages(
  transitions: Transition[],
  revision: number,
  budget: number,
): WatchEventsResponse[] {
  const out: WatchEventsResponse[] = [];
  let start = 0;
  do {
    const end = fittingEnd(transitions, start, budget, transitionCeiling);
    if (start === 0 && end === transitions.length) return [{ transitions, revision }];
    const chunk = transitions.slice(start, end);
    const last = chunk[chunk.length - 1] as Transition;
    out.push({
      transitions: chunk,
      revision: end === transitions.length ? revision : last.revision,
    });
    start = end;
  } while (start < transitions.length);
  return out;
}

/** The stored feed after `after`, in batches of about 1000 transitions, up to the head as of now. */
export async function* readFeed(
  db: StatusLevel,
  after: number,
  feedStart: number,
  match: (fe: FeedEntry) => boolean,
): AsyncGenerator<EventBatch> {
  if (after + 1 < feedStart) throw compacted(after, feedStart);
  const start = await segmentAtOrBefore(db, after + 1);
  // The iterator reads a snapshot: a sweep while it runs cannot pull segments from under it.
  const it = db.iterator({ gte: start ?? FEED, lt: prefixEnd(FEED) });
  try {
    let transitions: Transition[] = [];
    let revision = after;
    for (;;) {
      const chunk = await it.nextv(16);
      if (chunk.length === 0) break;
      for (const [key, value] of chunk) {
        const { first, last, atMs } = parseSegmentKey(key);
        if (last <= after) continue;
        if (first > revision + 1) throw compacted(revision, first); // swept while we lagged
        const at = new Date(atMs); // one commit, one time
        for (const fe of decodeSegment(key, value)) {
          if (fe.entry.revision > after && match(fe))
            transitions.push(toTransition(fe, fe.entry, at));
        }
        revision = last;
        if (transitions.length >= 1000) {
          yield { transitions, revision };
          transitions = [];
        }
      }
    }
    if (transitions.length > 0 || revision > after) yield { transitions, revision };
  } finally {
    await it.close();
  }
}

/** The key of the segment that holds `revision` (or the last one before it). */
export async function segmentAtOrBefore(
  db: StatusLevel,
  revision: number,
): Promise<string | undefined> {
  const keys = await db
    .keys({ gte: FEED, lt: segmentSeekKey(revision), reverse: true, limit: 1 })
    .all();
  return keys[0];
}

function checkResume(src: WatchSource, fromRevision: number): void {
  src.assertOpen();
  if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) {
    throw invalidArgument('from_revision', 'must be a revision ≥ 0');
  }
  const revision = src.revision();
  if (fromRevision > revision) {
    throw new DsatError(
      'OUT_OF_RANGE',
      'REVISION_AHEAD',
      `from_revision ${fromRevision} is ahead of the store's revision ${revision}`,
      { field: 'from_revision' },
    );
  }
  if (fromRevision !== 0 && fromRevision + 1 < src.feedStart()) {
    throw compacted(fromRevision, src.feedStart());
  }
}

export function compacted(revision: number, feedStart: number): DsatError {
  return new DsatError(
    'OUT_OF_RANGE',
    'REVISION_COMPACTED',
    `revision ${revision} is older than the retained feed, which starts at revision ${feedStart}`,
    { field: 'from_revision', metadata: { feed_start: String(feedStart) } },
  );
}

/** A function, so that TypeScript does not narrow `aborted` across awaits. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}
