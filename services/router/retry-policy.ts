import type { TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { TaskError, TaskProgress } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { CompiledStage } from './pipeline-registry';
import { transitionWrite } from './transition-write';

/** An attempt that ended without a result. */
export interface EndedAttempt {
  readonly taskId: string;
  readonly branchId: string;
  readonly stage: CompiledStage;
  readonly attempt: number;
  readonly workerId: string;
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

/**
 * A Failure report: FAILED when not retryable, DEAD_LETTERED when the stage's attempts are
 * spent, else RETRY_WAIT (the tracker queues the next attempt after the backoff).
 */
export function planFailure(
  a: EndedAttempt,
  error: TaskError,
  transitionId: () => string,
): FailurePlan {
  const base = {
    taskId: a.taskId,
    expectedState: TaskState.TASK_STATE_RUNNING,
    expectedAttempt: a.attempt,
    attempt: a.attempt,
    workerId: a.workerId,
    branchId: a.branchId,
    error,
    progress: a.progress,
  };
  if (isNonRetryable(a.stage, error)) {
    return {
      kind: 'failed',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_FAILED,
          reason: FAILURE_REASONS.nonRetryable,
        }),
      ],
    };
  }
  if (a.attempt >= a.stage.maxAttempts) {
    return {
      kind: 'dead-lettered',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_DEAD_LETTERED,
          reason: FAILURE_REASONS.exhausted,
        }),
      ],
    };
  }
  return {
    kind: 'retry-wait',
    writes: [
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        toState: TaskState.TASK_STATE_RETRY_WAIT,
        reason: FAILURE_REASONS.retryable,
      }),
    ],
  };
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
  transitionId: () => string,
): FailurePlan {
  const base = {
    taskId: a.taskId,
    expectedState: from,
    expectedAttempt: a.attempt,
    workerId: a.workerId,
    branchId: a.branchId,
    reason,
    progress: a.progress,
  };
  if (a.attempt < a.stage.maxAttempts) {
    return {
      kind: 'requeued',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_QUEUED,
          attempt: a.attempt + 1,
        }),
      ],
    };
  }
  const error: TaskError = {
    code: reason,
    message: `attempt ${a.attempt} of ${a.stage.maxAttempts} was lost (${reason})`,
    retryable: true,
    details: {},
  };
  if (from === TaskState.TASK_STATE_RUNNING) {
    return {
      kind: 'dead-lettered',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_DEAD_LETTERED,
          attempt: a.attempt,
          error,
        }),
      ],
    };
  }
  return {
    kind: 'dead-lettered',
    writes: [
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        toState: TaskState.TASK_STATE_TIMED_OUT,
        attempt: a.attempt,
        error,
      }),
      transitionWrite({
        ...base,
        expectedState: TaskState.TASK_STATE_TIMED_OUT,
        transitionId: transitionId(),
        toState: TaskState.TASK_STATE_DEAD_LETTERED,
        attempt: a.attempt,
        reason: FAILURE_REASONS.exhausted,
        error,
      }),
    ],
  };
}

/**
 * The lease: a running attempt that went without a heartbeat past the stage's
 * heartbeat_timeout is TIMED_OUT (HEARTBEAT_TIMEOUT), then, in the same batch, RETRY_WAIT, or
 * DEAD_LETTERED when attempts are spent, or FAILED when the stage lists HEARTBEAT_TIMEOUT as
 * non-retryable.
 */
export function planLeaseLost(a: EndedAttempt, transitionId: () => string): FailurePlan {
  const error: TaskError = {
    code: FAILURE_REASONS.heartbeatTimeout,
    message: `no heartbeat for ${a.stage.heartbeatTimeoutMs} ms (heartbeat_timeout of stage ${a.stage.name})`,
    retryable: true,
    details: {},
  };
  const base = {
    taskId: a.taskId,
    expectedAttempt: a.attempt,
    attempt: a.attempt,
    workerId: a.workerId,
    branchId: a.branchId,
    error,
    progress: a.progress,
  };
  const then = isNonRetryable(a.stage, error)
    ? {
        kind: 'failed' as const,
        to: TaskState.TASK_STATE_FAILED,
        reason: FAILURE_REASONS.nonRetryable,
      }
    : a.attempt >= a.stage.maxAttempts
      ? {
          kind: 'dead-lettered' as const,
          to: TaskState.TASK_STATE_DEAD_LETTERED,
          reason: FAILURE_REASONS.exhausted,
        }
      : {
          kind: 'retry-wait' as const,
          to: TaskState.TASK_STATE_RETRY_WAIT,
          reason: FAILURE_REASONS.heartbeatTimeout,
        };
  return {
    kind: then.kind,
    writes: [
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        expectedState: TaskState.TASK_STATE_RUNNING,
        toState: TaskState.TASK_STATE_TIMED_OUT,
        reason: FAILURE_REASONS.heartbeatTimeout,
      }),
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        expectedState: TaskState.TASK_STATE_TIMED_OUT,
        toState: then.to,
        reason: then.reason,
      }),
    ],
  };
}
