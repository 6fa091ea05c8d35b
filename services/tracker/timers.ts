import { createHash } from 'node:crypto';
import type { TransitionOutcome, TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Task, TaskError } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { Logger } from '../shared/logger';
import { formatMs } from '../shared/proto-duration';
import { backoffBaseMs, backoffDelayMs } from './backoff';
import type { Due } from './deadlines';
import { createDeadlineScheduler } from './deadlines';
import type { Clock } from './monotonic-clock';
import type { PipelineCatalog, PipelineRef } from './pipeline-catalog';
import type { StagePolicy } from './stage-policy';
import type { TimerTransition } from './timer-feed';
import type { TransitionSink } from './transition-sink';

/**
 * What a deadline is for. `queue`, `run` and `async` are the stage timeouts; `retry` ends a
 * RETRY_WAIT backoff; `settle` finishes a TIMED_OUT that its writer left without a follow-up.
 */
export type TimerKind = 'queue' | 'run' | 'async' | 'retry' | 'settle';

/** The reason (and error code) a timeout is recorded with. */
export const TIMEOUT_REASONS = {
  queue: 'QUEUE_TIMEOUT',
  run: 'RUN_TIMEOUT',
  async: 'ASYNC_TIMEOUT',
} as const;

/** Reasons of the tracker's other writes. */
export const TRACKER_REASONS = {
  retry: 'RETRY',
  exhausted: 'ATTEMPTS_EXHAUSTED',
  nonRetryable: 'NON_RETRYABLE_ERROR',
} as const;

/** Every transition id the tracker writes starts with this, so routers can tell its writes. */
export const TRACKER_TRANSITION_PREFIX = 'tracker-';

/**
 * A deterministic transition id (a repeated write is then answered as a duplicate, never applied
 * twice), within the store's 128 characters: long task ids are hashed.
 */
export function trackerTransitionId(...parts: (string | number)[]): string {
  const id = TRACKER_TRANSITION_PREFIX + parts.join('-');
  if (id.length <= 128) return id;
  return `${TRACKER_TRANSITION_PREFIX}${String(parts[0])}-${createHash('sha256').update(id).digest('hex').slice(0, 40)}`;
}

const S = TaskState;
const TERMINAL = new Set<TaskState>([
  S.TASK_STATE_SUCCEEDED,
  S.TASK_STATE_FAILED,
  S.TASK_STATE_DEAD_LETTERED,
  S.TASK_STATE_CANCELLED,
]);

/** One armed timer of one task. */
export interface ArmedTimer {
  readonly taskId: string;
  readonly pipeline: string;
  readonly version: number;
  readonly stage: string;
  /** The state the compare-and-set expects; RUNNING replaces DISPATCHED under the same run timer. */
  state: TaskState;
  readonly attempt: number;
  readonly kind: TimerKind;
  /** How long the deadline was, for the error message. */
  readonly durationMs: number;
  /** The revision of the transition that armed it; it makes the write's transition ids unique. */
  readonly armRevision: number;
  /** The revision of the last transition of the task the tracker has folded in. */
  revision: number;
  /** The error carried by a TIMED_OUT that awaits its follow-up. */
  readonly error: TaskError | undefined;
}

export interface TimerStats {
  /** Deadlines that fell due and were written. */
  fired: number;
  /** Writes the store applied. */
  applied: number;
  /** Writes refused because the task had moved on (the timer lost a race to a result). */
  lostRace: number;
  /** Writes refused for another reason (logged). */
  refused: number;
  /** Writes tried again because the store could not be reached. */
  retriedWrites: number;
}

export interface TaskTimers {
  /** Loads the pipeline versions that `apply(transitions)` will need. */
  prepare(transitions: readonly TimerTransition[]): Promise<void>;
  /** Folds feed transitions in, in revision order: arms, moves or disarms deadlines. */
  apply(transitions: readonly TimerTransition[]): void;
  /** Loads the pipeline versions that `restore(tasks)` will need. */
  prepareRestore(tasks: readonly Task[]): Promise<void>;
  /**
   * Re-arms from stored records (`ListUnfinishedTasks`) at start-up or after a feed gap. Feed
   * transitions up to each record's revision are then skipped, until `observeRevision` passes
   * `untilRevision`. `storeNowMs` is the store's wall clock when the records were read (their
   * `updated_at` is on that clock); without it the tracker's own wall clock stands in.
   */
  restore(tasks: readonly Task[], untilRevision: number, storeNowMs?: number): void;
  /** The feed has been seen up to `revision`. */
  observeRevision(revision: number): void;
  /** Forgets every timer and pin, before a full re-sync. */
  reset(): void;
  /** Marks a task as pinned to a pipeline version (the tracker learned it from a record). */
  pin(taskId: string, version: number): void;
  /** The armed timer of a task. */
  armed(taskId: string): (ArmedTimer & { readonly at: number }) | undefined;
  readonly size: number;
  readonly stats: Readonly<TimerStats>;
  /** Stops the timer and waits for the writes in flight. */
  stop(): Promise<void>;
}

export interface TaskTimersOptions {
  readonly clock: Clock;
  readonly sink: TransitionSink;
  readonly catalog: PipelineCatalog;
  readonly logger?: Logger;
  /** [0, 1) for the backoff jitter. */
  readonly random?: () => number;
  /** How soon a write that could not reach the store is tried again. Default 1 s. */
  readonly writeRetryMs?: number;
  /** How long a TIMED_OUT may wait for its writer's follow-up before the tracker settles it. */
  readonly settleGraceMs?: number;
}

/**
 * The tracker's timers, driven by the status feed.
 *
 * Deadlines run on the tracker's own monotonic clock, from the moment the tracker saw the
 * transition that armed them; no peer's timestamp moves a live deadline. A deadline that falls
 * due writes, in ONE store batch, the timeout (X → TIMED_OUT with reason QUEUE_TIMEOUT,
 * RUN_TIMEOUT or ASYNC_TIMEOUT) and its follow-up (RETRY_WAIT with attempts left, DEAD_LETTERED
 * with them spent, FAILED when the stage lists the timeout as non-retryable). Every write is a
 * compare-and-set on (state, attempt) at the armed stage, so a timer that races a result loses
 * with FAILED_PRECONDITION and changes nothing. A RETRY_WAIT on the feed (the tracker's own or a
 * router's) arms the backoff; when it is over, RETRY_WAIT → QUEUED with attempt + 1, reason RETRY.
 *
 * Re-arming from records after a restart: the remaining time is the stage's timeout minus the
 * record's age, and never less than zero, so a deadline that fell due while the tracker was down
 * fires at once. The age is `read_at - updated_at`, both on the status service's clock (the
 * tracker's wall clock is never compared with the store's, so a skewed tracker host does not
 * fire early), clamped at 0. It is the best known lower bound: a RUNNING record's `updated_at`
 * may be a later progress checkpoint, and a retry's jitter is not stored (its un-jittered base is
 * used), so a re-armed timer may fire late by that much, never early.
 */
export function createTaskTimers(options: TaskTimersOptions): TaskTimers {
  const { clock, sink, catalog, logger } = options;
  const random = options.random ?? Math.random;
  const writeRetryMs = options.writeRetryMs ?? 1_000;
  const settleGraceMs = options.settleGraceMs ?? 5_000;
  const pins = new Map<string, number>();
  /** Revisions already folded into restored records, skipped on the feed. */
  let restored = new Map<string, number>();
  let restoredUntil = 0;
  const inFlight = new Set<Promise<void>>();
  const stats: TimerStats = { fired: 0, applied: 0, lostRace: 0, refused: 0, retriedWrites: 0 };
  let storeDown = false;

  const scheduler = createDeadlineScheduler<ArmedTimer>({ clock, onDue: (due) => fire(due) });

  const versionOf = (taskId: string, pipeline: string) =>
    pins.get(taskId) ?? catalog.latestVersion(pipeline);

  const arm = (timer: ArmedTimer, at: number) => {
    scheduler.arm(timer.taskId, at, timer);
  };

  /** The deadline a state arms, with the policy's duration; undefined when none applies. */
  const deadlineFor = (
    state: TaskState,
    policy: StagePolicy,
    failedAttempt: number,
    jittered: boolean,
  ): { kind: TimerKind; ms: number } | undefined => {
    switch (state) {
      case S.TASK_STATE_QUEUED:
        return policy.queueTimeoutMs > 0 ? { kind: 'queue', ms: policy.queueTimeoutMs } : undefined;
      case S.TASK_STATE_DISPATCHED:
      case S.TASK_STATE_RUNNING:
        return policy.runTimeoutMs > 0 ? { kind: 'run', ms: policy.runTimeoutMs } : undefined;
      case S.TASK_STATE_WAITING:
        return policy.asyncTimeoutMs > 0 ? { kind: 'async', ms: policy.asyncTimeoutMs } : undefined;
      case S.TASK_STATE_RETRY_WAIT:
        return {
          kind: 'retry',
          ms: jittered
            ? backoffDelayMs(policy.backoff, failedAttempt, random)
            : backoffBaseMs(policy.backoff, failedAttempt),
        };
      case S.TASK_STATE_TIMED_OUT:
        return { kind: 'settle', ms: settleGraceMs };
      default:
        return undefined;
    }
  };

  const applyOne = (t: TimerTransition) => {
    if (t.toState === S.TASK_STATE_SUBMITTED) return;
    const skipUpTo = restored.get(t.taskId);
    if (skipUpTo !== undefined && t.revision <= skipUpTo) return;
    const current = scheduler.get(t.taskId)?.value;
    if (current !== undefined && t.revision <= current.revision) return;
    if (t.fromState === S.TASK_STATE_SUBMITTED)
      pins.set(t.taskId, catalog.latestVersion(t.pipeline));

    if (TERMINAL.has(t.toState)) {
      scheduler.disarm(t.taskId);
      pins.delete(t.taskId);
      return;
    }
    // RUNNING after DISPATCHED continues the same start-to-close deadline.
    if (
      t.toState === S.TASK_STATE_RUNNING &&
      current?.kind === 'run' &&
      current.attempt === t.attempt &&
      current.stage === t.stage
    ) {
      current.state = t.toState;
      current.revision = t.revision;
      return;
    }
    const version = versionOf(t.taskId, t.pipeline);
    const policy = catalog.policy(t.pipeline, version, t.stage);
    const deadline = deadlineFor(t.toState, policy, t.attempt, true);
    if (deadline === undefined) {
      scheduler.disarm(t.taskId);
      return;
    }
    arm(
      {
        taskId: t.taskId,
        pipeline: t.pipeline,
        version,
        stage: t.stage,
        state: t.toState,
        attempt: t.attempt,
        kind: deadline.kind,
        durationMs: deadline.ms,
        armRevision: t.revision,
        revision: t.revision,
        error: t.error,
      },
      clock.monotonicMs() + deadline.ms,
    );
  };

  const restoreOne = (task: Task, storeNow: number, now: number) => {
    restored.set(task.taskId, task.revision);
    pins.set(task.taskId, task.pipelineVersion);
    const age = Math.max(0, storeNow - (task.updatedAt?.getTime() ?? storeNow));
    // A fan-out's branches are tasks of their own, restored as such.
    const policy = catalog.policy(task.pipeline, task.pipelineVersion, task.stage);
    const deadline = deadlineFor(task.state, policy, task.attempt, false);
    if (deadline === undefined) return;
    arm(
      {
        taskId: task.taskId,
        pipeline: task.pipeline,
        version: task.pipelineVersion,
        stage: task.stage,
        state: task.state,
        attempt: task.attempt,
        kind: deadline.kind,
        durationMs: deadline.ms,
        armRevision: task.revision,
        revision: task.revision,
        error: task.lastError,
      },
      now + Math.max(0, deadline.ms - age),
    );
  };

  const timeoutError = (timer: ArmedTimer, reason: string, retryable: boolean): TaskError => {
    const what =
      timer.kind === 'queue'
        ? 'waited for a worker longer than its queue_timeout'
        : timer.kind === 'run'
          ? 'ran longer than its run_timeout'
          : 'waited for CompleteAsync longer than its async_timeout';
    return {
      code: reason,
      message: `attempt ${timer.attempt} at stage ${timer.stage} ${what} of ${formatMs(timer.durationMs)}`,
      retryable,
      details: { stage: timer.stage, timeout_ms: String(Math.round(timer.durationMs)) },
    };
  };

  /** TIMED_OUT → RETRY_WAIT, DEAD_LETTERED or FAILED, for `error` at the timer's attempt. */
  const followUp = (timer: ArmedTimer, policy: StagePolicy, error: TaskError, id: string) => {
    const toState = !error.retryable
      ? S.TASK_STATE_FAILED
      : timer.attempt >= policy.maxAttempts
        ? S.TASK_STATE_DEAD_LETTERED
        : S.TASK_STATE_RETRY_WAIT;
    const reason =
      toState === S.TASK_STATE_FAILED
        ? TRACKER_REASONS.nonRetryable
        : toState === S.TASK_STATE_DEAD_LETTERED
          ? TRACKER_REASONS.exhausted
          : error.code;
    return write(timer, id, S.TASK_STATE_TIMED_OUT, toState, timer.attempt, reason, error);
  };

  const write = (
    timer: ArmedTimer,
    transitionId: string,
    expectedState: TaskState,
    toState: TaskState,
    attempt: number,
    reason: string,
    error: TaskError | undefined,
  ): TransitionWrite => ({
    transitionId,
    taskId: timer.taskId,
    expectedState,
    expectedAttempt: timer.attempt,
    toState,
    // Named, not left empty: a stale timer must not hit the same (state, attempt) at a later stage.
    stage: timer.stage,
    attempt,
    workerId: '',
    reason,
    error,
    payload: undefined,
    progress: undefined,
    create: undefined,
    asyncToken: '',
    fanOutStages: [],
  });

  const plan = (timer: ArmedTimer): TransitionWrite[] => {
    const id = (...more: string[]) =>
      trackerTransitionId(timer.kind, timer.taskId, timer.armRevision, ...more);
    const policy = catalog.policy(timer.pipeline, timer.version, timer.stage);
    switch (timer.kind) {
      case 'retry':
        return [
          write(
            timer,
            id(),
            S.TASK_STATE_RETRY_WAIT,
            S.TASK_STATE_QUEUED,
            timer.attempt + 1,
            TRACKER_REASONS.retry,
            undefined,
          ),
        ];
      case 'settle': {
        const error = timer.error ?? {
          code: 'TIMED_OUT',
          message: `attempt ${timer.attempt} at stage ${timer.stage} timed out`,
          retryable: true,
          details: {},
        };
        return [followUp(timer, policy, error, id())];
      }
      default: {
        const reason = TIMEOUT_REASONS[timer.kind];
        const error = timeoutError(timer, reason, !policy.nonRetryable.has(reason));
        return [
          write(timer, id(), timer.state, S.TASK_STATE_TIMED_OUT, timer.attempt, reason, error),
          followUp(timer, policy, error, id('then')),
        ];
      }
    }
  };

  const settled = (timer: ArmedTimer, outcomes: TransitionOutcome[]) => {
    storeDown = false;
    const first = outcomes[0];
    if (first === undefined) return;
    if (first.code === 0) {
      stats.applied += outcomes.filter((o) => o.code === 0).length;
    } else if (first.code === 9 || first.code === 5) {
      // The task moved on (a result, a cancel) or is gone: the timer lost its race. Fine.
      stats.lostRace += 1;
      logger?.debug({ taskId: timer.taskId, kind: timer.kind, reason: first.reason }, 'timer lost');
    } else {
      stats.refused += 1;
      logger?.warn(
        { taskId: timer.taskId, kind: timer.kind, code: first.code, reason: first.reason },
        `the store refused a tracker write: ${first.message}`,
      );
    }
  };

  const unreachable = (due: Due<ArmedTimer>, err: unknown) => {
    if (!storeDown) {
      logger?.warn({ err }, 'the status store is unreachable; timer writes will be tried again');
      storeDown = true;
    }
    // Unless the feed armed something newer meanwhile, the same writes (same ids) go again.
    if (scheduler.get(due.key) !== undefined) return;
    stats.retriedWrites += 1;
    scheduler.arm(due.key, clock.monotonicMs() + writeRetryMs, due.value);
  };

  const fire = (due: Due<ArmedTimer>[]) => {
    for (const d of due) {
      stats.fired += 1;
      const p = sink.commit(plan(d.value)).then(
        (outcomes) => settled(d.value, outcomes),
        (err: unknown) => unreachable(d, err),
      );
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    }
  };

  return {
    async prepare(transitions) {
      // A batch's transitions mostly share one pipeline version: a ref like the one before it
      // is left out.
      const refs: PipelineRef[] = [];
      let last: PipelineRef | undefined;
      for (const t of transitions) {
        if (t.pipeline === '') continue;
        const version = pins.get(t.taskId) ?? 0;
        if (last !== undefined && last.name === t.pipeline && last.version === version) continue;
        last = { name: t.pipeline, version };
        refs.push(last);
      }
      await catalog.ensure(refs);
    },
    apply(transitions) {
      for (const t of transitions) applyOne(t);
    },
    async prepareRestore(tasks) {
      await catalog.ensure(tasks.map((t) => ({ name: t.pipeline, version: t.pipelineVersion })));
    },
    restore(tasks, untilRevision, storeNowMs) {
      restoredUntil = Math.max(restoredUntil, untilRevision);
      const storeNow = storeNowMs ?? clock.wallMs();
      const now = clock.monotonicMs();
      for (const task of tasks) restoreOne(task, storeNow, now);
    },
    observeRevision(revision) {
      if (restored.size > 0 && revision >= restoredUntil) restored = new Map();
    },
    reset() {
      scheduler.clear();
      pins.clear();
      restored = new Map();
      restoredUntil = 0;
    },
    pin(taskId, version) {
      if (version > 0) pins.set(taskId, version);
    },
    armed(taskId) {
      const d = scheduler.get(taskId);
      return d === undefined ? undefined : { ...d.value, at: d.at };
    },
    get size() {
      return scheduler.size;
    },
    stats,
    async stop() {
      scheduler.stop();
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}
