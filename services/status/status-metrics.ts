import type { Attributes, BatchObservableResult } from '@opentelemetry/api';
import { taskStateToJSON } from '../../gen/dsat/task/v1/task';
import type { Task } from '../../gen/dsat/task/v1/task';
import { attributeSets, dsatMeter, metricsActive, observableInts } from '../shared/metrics';
import type { FeedEntry } from './store-codec';
import type { StoreStats } from './status-store';

/** A reason is a label only when it looks like one of dsat's codes (bounded, not free text). */
const REASON_LABEL = /^[A-Z][A-Z0-9_]{0,47}$/;

/** TaskState names without their prefix, by number: SUCCEEDED, RETRY_WAIT, … */
const STATE_NAMES = new Map<number, string>();
const stateName = (state: number) => {
  let name = STATE_NAMES.get(state);
  if (name === undefined) {
    name = taskStateToJSON(state).replace(/^TASK_STATE_/, '');
    STATE_NAMES.set(state, name);
  }
  return name;
};

/**
 * The status service's metrics: every committed transition by pipeline, stage, state and reason
 * (so retries are RETRY_WAIT, timeouts TIMED_OUT, dead letters DEAD_LETTERED, per stage), how long
 * tasks took from submit to their end, and the store's own figures. Transitions are counted in a
 * map here and read at collection, so a commit costs a map increment per transition.
 */
export interface StatusMetrics {
  /** The store's `onCommitted`; undefined when the process exports no metrics. */
  readonly onCommitted:
    ((entries: readonly FeedEntry[], ended: readonly Task[]) => void) | undefined;
  /** Reads the store's figures at each collection, until `stop()`. */
  observe(stats: () => StoreStats): void;
  stop(): void;
}

export function statusMetrics(): StatusMetrics {
  if (!metricsActive()) return { onCommitted: undefined, observe: () => {}, stop: () => {} };
  const meter = dsatMeter();
  const { gauge, counter, seconds, observe: readEachCollection } = observableInts(meter);
  const transitions = counter(
    'dsat.task.transitions',
    'Transitions committed, by pipeline, stage, state entered and reason: RETRY_WAIT counts retries, TIMED_OUT timeouts, DEAD_LETTERED dead letters.',
    '{transition}',
  );
  const duration = seconds(
    'dsat.task.duration',
    'Seconds from a task’s submit to its end, by pipeline and final state.',
  );
  const commits = counter('dsat.status.commits', 'LevelDB batches committed.', '{commit}');
  const written = counter(
    'dsat.status.written',
    'Bytes of keys and values put into LevelDB.',
    'By',
  );
  const refused = counter(
    'dsat.status.writes.refused',
    'Transition writes refused, by reason (STALE_ATTEMPT, ILLEGAL_TRANSITION, STATE_MISMATCH, INVALID_ARGUMENT, NOT_FOUND).',
    '{write}',
  );
  const duplicates = counter(
    'dsat.status.writes.duplicate',
    'Writes answered as duplicates of one already applied.',
    '{write}',
  );
  const unfinished = gauge(
    'dsat.status.tasks.unfinished',
    'Tasks not yet ended (kept in memory).',
    '{task}',
  );
  const unfinishedBytes = gauge(
    'dsat.status.tasks.unfinished.size',
    'Memory the unfinished tasks count against --max-unfinished-bytes.',
    'By',
  );
  const unfinishedLimit = gauge(
    'dsat.status.tasks.unfinished.limit',
    'The --max-unfinished-bytes past which submits are refused (absent when there is none).',
    'By',
  );
  const watchers = gauge(
    'dsat.status.watchers',
    'Open WatchEvents and WatchTask streams.',
    '{stream}',
  );

  // By attribute set: the overflow set, past MAX_SERIES, is one more key.
  const counts = new Map<Attributes, number>();
  const transitionSets = attributeSets([
    'dsat.pipeline',
    'dsat.stage',
    'dsat.state',
    'dsat.reason',
  ]);
  const count = (e: FeedEntry) => {
    const reason = REASON_LABEL.test(e.entry.reason) ? e.entry.reason : 'OTHER';
    const a = transitionSets(e.pipeline, e.entry.stage, stateName(e.entry.to), reason);
    counts.set(a, (counts.get(a) ?? 0) + 1);
  };
  const endedSets = attributeSets(['dsat.pipeline', 'dsat.state']);
  const ended = (t: Task) => {
    const created = t.createdAt?.getTime();
    if (created === undefined) return;
    const endedAt = t.updatedAt?.getTime() ?? Date.now();
    duration.record(
      Math.max(0, endedAt - created) / 1000,
      endedSets(t.pipeline, stateName(t.state)),
    );
  };

  const observers: (() => void)[] = [];
  return {
    onCommitted(entries, endedTasks) {
      for (let i = 0; i < entries.length; i++) count(entries[i]!);
      for (let i = 0; i < endedTasks.length; i++) ended(endedTasks[i]!);
    },
    observe(stats) {
      const callback = (result: BatchObservableResult) => {
        for (const [attributes, n] of counts) result.observe(transitions, n, attributes);
        const s = stats();
        result.observe(commits, s.commits);
        result.observe(written, s.writtenBytes);
        const illegal = s.illegalRefused - s.stateMismatchRefused;
        result.observe(refused, s.staleRefused, { 'dsat.reason': 'STALE_ATTEMPT' });
        result.observe(refused, illegal, { 'dsat.reason': 'ILLEGAL_TRANSITION' });
        result.observe(refused, s.stateMismatchRefused, { 'dsat.reason': 'STATE_MISMATCH' });
        result.observe(refused, s.invalidRefused, { 'dsat.reason': 'INVALID_ARGUMENT' });
        result.observe(refused, s.notFoundRefused, { 'dsat.reason': 'NOT_FOUND' });
        result.observe(duplicates, s.duplicates);
        result.observe(unfinished, s.unfinishedTasks);
        result.observe(unfinishedBytes, s.unfinishedBytes);
        if (Number.isFinite(s.maxUnfinishedBytes)) {
          result.observe(unfinishedLimit, s.maxUnfinishedBytes);
        }
        result.observe(watchers, s.watchers);
      };
      const all = [
        transitions,
        commits,
        written,
        refused,
        duplicates,
        unfinished,
        unfinishedBytes,
        unfinishedLimit,
        watchers,
      ];
      observers.push(readEachCollection(all, callback));
    },
    stop() {
      for (const remove of observers.splice(0)) remove();
    },
  };
}
