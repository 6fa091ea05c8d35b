import type { TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { TaskError, TaskProgress } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { CompiledStage } from './pipeline-registry';
import { transitionWrite, withError } from './transition-write';

/** An attempt that ended without a result. */
export interface EndedAttempt {
  readonly taskId: string;
  readonly stage: CompiledStage;
  readonly attempt: number;
  readonly progress: TaskProgress | undefined;
}

export type FailureKind = 'retry-wait' | 'failed' | 'dead-lettered' | 'requeued';

export interface FailurePlan {
  readonly kind: FailureKind;
  readonly writes: TransitionWrite[];
}

export const FAILURE_REASONS = {
  retryable: 'RETRYABLE_ERROR',
  nonRetryable: 'NON_RETRYABLE_ERROR',
  exhausted: 'ATTEMPTS_EXHAUSTED',
  workerLost: 'WORKER_LOST',
  routerRestart: 'ROUTER_RESTART',
  routerShutdown: 'ROUTER_SHUTDOWN',
  heartbeatTimeout: 'HEARTBEAT_TIMEOUT',
} as const;

/** True when the stage must not retry this error: the worker said so, or the stage lists it. */
export function isNonRetryable(stage: CompiledStage, error: TaskError): boolean {
  return !error.retryable || stage.nonRetryable.has(error.code);
}

function move(
  a: EndedAttempt,
  from: TaskState,
  to: TaskState,
  attempt: number,
  workerId: string,
  reason: string,
  transitionId: () => string,
): TransitionWrite {
  return transitionWrite(
    transitionId(),
    a.taskId,
    from,
    a.attempt,
    to,
    attempt,
    '',
    workerId,
    reason,
  );
}

/**
 * A Failure report: FAILED when not retryable, DEAD_LETTERED when the stage's attempts are
 * spent, else RETRY_WAIT (the tracker queues the next attempt after the backoff).
 */
export function planFailure(
  a: EndedAttempt,
  error: TaskError,
  workerId: string,
  transitionId: () => string,
): FailurePlan {
  const [kind, to, reason] = isNonRetryable(a.stage, error)
    ? (['failed', TaskState.TASK_STATE_FAILED, FAILURE_REASONS.nonRetryable] as const)
    : a.attempt >= a.stage.maxAttempts
      ? (['dead-lettered', TaskState.TASK_STATE_DEAD_LETTERED, FAILURE_REASONS.exhausted] as const)
      : (['retry-wait', TaskState.TASK_STATE_RETRY_WAIT, FAILURE_REASONS.retryable] as const);
  const w = move(a, TaskState.TASK_STATE_RUNNING, to, a.attempt, workerId, reason, transitionId);
  return { kind, writes: [withError(w, error, a.progress)] };
}

/**
 * An attempt nobody runs any more (its worker's stream broke, or the router restarted): queued
 * again at once with attempt + 1 and the reason, or DEAD_LETTERED when that was the last
 * attempt. A task still DISPATCHED (its RUNNING was never stored) cannot go to DEAD_LETTERED
 * directly, so it passes through TIMED_OUT with the same reason.
 */
export function planRequeue(
  a: EndedAttempt,
  from: TaskState.TASK_STATE_RUNNING | TaskState.TASK_STATE_DISPATCHED,
  reason: string,
  workerId: string,
  transitionId: () => string,
): FailurePlan {
  if (a.attempt < a.stage.maxAttempts) {
    const w = move(
      a,
      from,
      TaskState.TASK_STATE_QUEUED,
      a.attempt + 1,
      workerId,
      reason,
      transitionId,
    );
    w.progress = a.progress;
    return { kind: 'requeued', writes: [w] };
  }
  const error: TaskError = {
    code: reason,
    message: `attempt ${a.attempt} of ${a.stage.maxAttempts} was lost (${reason})`,
    retryable: true,
    details: {},
  };
  if (from === TaskState.TASK_STATE_RUNNING) {
    const w = move(
      a,
      from,
      TaskState.TASK_STATE_DEAD_LETTERED,
      a.attempt,
      workerId,
      reason,
      transitionId,
    );
    return { kind: 'dead-lettered', writes: [withError(w, error, a.progress)] };
  }
  const timedOut = move(
    a,
    from,
    TaskState.TASK_STATE_TIMED_OUT,
    a.attempt,
    workerId,
    reason,
    transitionId,
  );
  const dead = move(
    a,
    TaskState.TASK_STATE_TIMED_OUT,
    TaskState.TASK_STATE_DEAD_LETTERED,
    a.attempt,
    workerId,
    FAILURE_REASONS.exhausted,
    transitionId,
  );
  return {
    kind: 'dead-lettered',
    writes: [withError(timedOut, error, a.progress), withError(dead, error)],
  };
}

/**
 * The lease: a running attempt that went without a heartbeat past the stage's
 * heartbeat_timeout is TIMED_OUT (HEARTBEAT_TIMEOUT), then, in the same batch, RETRY_WAIT, or
 * DEAD_LETTERED when attempts are spent, or FAILED when the stage lists HEARTBEAT_TIMEOUT as
 * non-retryable.
 */
export function planLeaseLost(
  a: EndedAttempt,
  workerId: string,
  transitionId: () => string,
): FailurePlan {
  const error: TaskError = {
    code: FAILURE_REASONS.heartbeatTimeout,
    message: `no heartbeat for ${a.stage.heartbeatTimeoutMs} ms (heartbeat_timeout of stage ${a.stage.name})`,
    retryable: true,
    details: {},
  };
  const [kind, to, reason] = isNonRetryable(a.stage, error)
    ? (['failed', TaskState.TASK_STATE_FAILED, FAILURE_REASONS.nonRetryable] as const)
    : a.attempt >= a.stage.maxAttempts
      ? (['dead-lettered', TaskState.TASK_STATE_DEAD_LETTERED, FAILURE_REASONS.exhausted] as const)
      : ([
          'retry-wait',
          TaskState.TASK_STATE_RETRY_WAIT,
          FAILURE_REASONS.heartbeatTimeout,
        ] as const);
  const timedOut = move(
    a,
    TaskState.TASK_STATE_RUNNING,
    TaskState.TASK_STATE_TIMED_OUT,
    a.attempt,
    workerId,
    FAILURE_REASONS.heartbeatTimeout,
    transitionId,
  );
  const then = move(
    a,
    TaskState.TASK_STATE_TIMED_OUT,
    to,
    a.attempt,
    workerId,
    reason,
    transitionId,
  );
  return { kind, writes: [withError(timedOut, error, a.progress), withError(then, error)] };
}
