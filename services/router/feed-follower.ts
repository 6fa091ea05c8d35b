import { delay, isAbortError } from 'abort-controller-x';
import { Status } from 'nice-grpc-common';
import type { WatchEventsResponse } from '../../gen/dsat/status/v1/status';
import type { Task, Transition } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { Logger } from '../shared/logger';
import type { Dispatcher } from './dispatcher';
import { CANCEL_REASONS } from './dispatcher';
import type { HeldTaskInit } from './held-task';
import type { PipelineRegistry } from './pipeline-registry';
import type { TransitionIds } from './transition-write';

/** The feed states a router acts on: new work, and tasks taken from it. */
export const FOLLOWED_STATES = [
  TaskState.TASK_STATE_QUEUED,
  TaskState.TASK_STATE_TIMED_OUT,
  TaskState.TASK_STATE_CANCELLED,
];

/** Reasons of QUEUED transitions written by another router, which forwards the task itself. */
const FORWARDED_REASONS = new Set([
  'STAGE_DONE',
  'PUBLISHED',
  'ASYNC_COMPLETED',
  'SUBMITTED',
  'QUEUED',
]);

/** Forwards waiting for the feed at most; past it the oldest are dropped (the feed has them). */
const MAX_FORWARDS_WAITING = 10_000;

export interface FeedFollowerOptions {
  readonly watch: (fromRevision: number, signal: AbortSignal) => AsyncIterable<WatchEventsResponse>;
  readonly readTask: (taskId: string) => Promise<Task | undefined>;
  readonly pipelines: PipelineRegistry;
  readonly dispatcher: Dispatcher;
  readonly ids: TransitionIds;
  readonly serves: (stage: string) => boolean;
  readonly logger: Logger;
  /** Rebuilds the queues after the feed lost our place (OUT_OF_RANGE); returns the new revision. */
  readonly rebuild: () => Promise<number>;
  /** How long a task queued here by another router may wait for its ForwardTasks. */
  readonly forwardGraceMs?: number;
  /** Reads of tasks in flight at once. */
  readonly lookupConcurrency?: number;
  /** How long a forwarded task waits for the feed to announce it. */
  readonly forwardWaitMs?: number;
}

export interface FeedFollower {
  start(fromRevision: number): void;
  /**
   * Holds a task another router forwarded once the feed has announced it QUEUED at that stage and
   * attempt (true when it already has); until then it waits here, never replacing what is held.
   */
  confirmForward(init: HeldTaskInit): boolean;
  /** The revision the feed has been read up to. */
  readonly revision: number;
  stop(): Promise<void>;
}

/**
 * Follows the status feed for the router's stages: tasks queued by others (the tracker's retries
 * and redrives, another router's stage done) are read with GetTask and held; tasks this router
 * holds that someone else timed out or cancelled are dropped, and their workers told to abort.
 * The router's own transitions are skipped by their transition_id prefix.
 */
export function createFeedFollower(options: FeedFollowerOptions): FeedFollower {
  const { dispatcher, logger } = options;
  const abort = new AbortController();
  const graceMs = options.forwardGraceMs ?? 1_000;
  const concurrency = options.lookupConcurrency ?? 8;
  const forwardWaitMs = options.forwardWaitMs ?? 10_000;
  let revision = 0;
  let loop: Promise<void> | undefined;

  const waiting = new Map<string, Transition>();
  /**
   * Forwards the feed has not announced yet, oldest first. Dropping one is always safe: its task
   * is QUEUED in the store, and the feed's announcement has it read and held as any other.
   */
  const forwarded = new Map<string, { init: HeldTaskInit; due: number }>();
  const ready: Transition[] = [];
  const later: { due: number; e: Transition }[] = [];
  let laterTimer: NodeJS.Timeout | undefined;
  let reading = 0;

  function pump() {
    while (reading < concurrency && ready.length > 0) {
      const e = ready.shift()!;
      reading++;
      lookup(e)
        .catch((err: unknown) => {
          if (!abort.signal.aborted)
            logger.warn({ err, taskId: e.taskId }, 'cannot read a queued task');
        })
        .finally(() => {
          reading--;
          waiting.delete(e.taskId);
          pump();
        });
    }
  }

  function runLater() {
    laterTimer = undefined;
    const now = performance.now();
    while (later.length > 0 && later[0]!.due <= now) ready.push(later.shift()!.e);
    pump();
    if (later.length > 0 && !abort.signal.aborted) {
      laterTimer = setTimeout(runLater, Math.max(1, later[0]!.due - now));
    }
  }

  function schedule(e: Transition, delayMs: number) {
    const known = waiting.has(e.taskId);
    waiting.set(e.taskId, e);
    if (known) return;
    if (delayMs <= 0) {
      ready.push(e);
      pump();
      return;
    }
    later.push({ due: performance.now() + delayMs, e });
    laterTimer ??= setTimeout(runLater, delayMs);
  }

  /** Reads a task announced QUEUED and holds it if it still is, at a stage served here. */
  async function lookup(announced: Transition) {
    const e = waiting.get(announced.taskId) ?? announced;
    const held = dispatcher.holding(e.taskId);
    if (held && held.stage === e.stage && held.attempt >= e.attempt) return;
    const task = await options.readTask(e.taskId);
    if (task === undefined) return;
    // A fan-out branch is a task of its own: its record says where it is.
    const { state, stage, attempt } = task;
    if (state !== TaskState.TASK_STATE_QUEUED || !options.serves(stage)) return;
    const pipeline = await options.pipelines.version(task.pipeline, task.pipelineVersion);
    const s = pipeline.stages.get(stage);
    if (s === undefined) {
      logger.warn({ taskId: task.taskId, stage }, 'a queued task names a stage its pipeline lacks');
      return;
    }
    const init: HeldTaskInit = {
      taskId: task.taskId,
      pipeline,
      stage: s,
      attempt,
      priority: task.priority,
      hops: task.hops,
      traceparent: task.traceparent,
      input: task.input,
      progress: task.progress,
      parentTaskId: task.parentTaskId,
    };
    if (dispatcher.enqueue(init)) {
      logger.debug(
        { taskId: task.taskId, stage, attempt, reason: e.reason },
        'picked up from the feed',
      );
    }
  }

  function confirmForward(init: HeldTaskInit): boolean {
    const e = waiting.get(init.taskId);
    if (e !== undefined && e.stage === init.stage.name && e.attempt === init.attempt) {
      dispatcher.enqueue(init);
      return true;
    }
    const now = performance.now();
    for (const [taskId, f] of forwarded) {
      if (f.due > now && forwarded.size < MAX_FORWARDS_WAITING) break;
      forwarded.delete(taskId);
    }
    forwarded.delete(init.taskId);
    forwarded.set(init.taskId, { init, due: now + forwardWaitMs });
    return false;
  }

  function handle(transitions: readonly Transition[]) {
    for (const e of transitions) {
      if (options.ids.isOwn(e.transitionId) || !options.serves(e.stage)) continue;
      const held = dispatcher.holding(e.taskId);
      // Old news about an attempt this router already replaced.
      if (held && held.stage === e.stage && e.attempt < held.attempt) continue;
      if (e.toState === TaskState.TASK_STATE_QUEUED) {
        if (held && held.stage === e.stage && held.attempt === e.attempt) continue;
        if (held) dispatcher.drop(e.taskId, CANCEL_REASONS.superseded);
        const f = forwarded.get(e.taskId);
        if (f !== undefined) {
          forwarded.delete(e.taskId);
          if (f.init.stage.name === e.stage && f.init.attempt === e.attempt) {
            dispatcher.enqueue(f.init);
            continue;
          }
        }
        schedule(e, FORWARDED_REASONS.has(e.reason) ? graceMs : 0);
        continue;
      }
      if (!held) continue;
      const reason =
        e.toState === TaskState.TASK_STATE_CANCELLED
          ? CANCEL_REASONS.requested
          : e.reason || 'TIMED_OUT';
      dispatcher.drop(e.taskId, reason);
    }
  }

  async function follow(from: number) {
    revision = from;
    let backoff = 100;
    while (!abort.signal.aborted) {
      try {
        for await (const res of options.watch(revision, abort.signal)) {
          backoff = 100;
          handle(res.transitions);
          if (res.revision > revision) revision = res.revision;
        }
      } catch (err) {
        if (abort.signal.aborted || isAbortError(err)) break;
        if ((err as { code?: unknown }).code === Status.OUT_OF_RANGE) {
          logger.warn(
            { revision },
            'the feed no longer reaches our revision; rebuilding the queues',
          );
          try {
            revision = await options.rebuild();
            continue;
          } catch (rebuildErr) {
            logger.warn({ err: rebuildErr }, 'queue rebuild failed');
          }
        } else {
          logger.warn(
            { err: (err as Error).message, revision, retryInMs: backoff },
            'feed broke; resuming',
          );
        }
      }
      try {
        await delay(abort.signal, backoff);
      } catch {
        break;
      }
      backoff = Math.min(backoff * 2, 5_000);
    }
  }

  return {
    start(fromRevision) {
      loop ??= follow(fromRevision);
    },
    confirmForward,
    get revision() {
      return revision;
    },
    async stop() {
      abort.abort();
      forwarded.clear();
      clearTimeout(laterTimer);
      await loop;
    },
  };
}
