import type { TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Payload, TaskError } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { asyncToken } from '../shared/async-token';
import type { CompiledPipeline, CompiledStage } from './pipeline-registry';
import { transitionWrite } from './transition-write';

/** The attempt a stage finished: where the task is, and what the stage made. */
export interface FinishedAttempt {
  readonly taskId: string;
  readonly branchId: string;
  readonly pipeline: CompiledPipeline;
  readonly stage: CompiledStage;
  readonly attempt: number;
  readonly hops: number;
  /** RUNNING for a worker's result, WAITING for CompleteAsync. */
  readonly from: TaskState.TASK_STATE_RUNNING | TaskState.TASK_STATE_WAITING;
  readonly workerId: string;
}

/** A task queued at its next stage by a plan, once the plan is committed. */
export interface NextStageTask {
  readonly stage: CompiledStage;
  readonly input: Payload;
  readonly hops: number;
}

export type PlanKind = 'advanced' | 'fanned-out' | 'succeeded' | 'failed' | 'waiting';

/** What a result does to a task: writes to commit in one atomic batch, and what follows. */
export interface StagePlan {
  readonly kind: PlanKind;
  readonly writes: TransitionWrite[];
  /** Tasks queued by the writes (the first branch first); empty unless advanced or fanned out. */
  readonly next: NextStageTask[];
  /** The error of a failed plan (undeclared edge, hop limit). */
  readonly error?: TaskError;
}

export const REASONS = {
  stageDone: 'STAGE_DONE',
  completed: 'COMPLETED',
  asyncWait: 'ASYNC_WAIT',
  asyncCompleted: 'ASYNC_COMPLETED',
  asyncFailed: 'ASYNC_FAILED',
  published: 'PUBLISHED',
  undeclaredNext: 'UNDECLARED_NEXT_STAGE',
  hopLimit: 'HOP_LIMIT',
} as const;

/**
 * Where a finished stage sends its task. An ASYNC stage's worker result parks the task WAITING
 * for its token; otherwise the result's `next_stages` choose among the declared edges (none: all
 * of them). No edge left: SUCCEEDED with the output. One: QUEUED there with the output as input.
 * Several: fan-out, the first in the write and the others as `fan_out_stages`. An undeclared
 * edge fails the task with UNDECLARED_NEXT_STAGE, and so does a next stage past the pipeline's
 * max_hops (HOP_LIMIT): a task runs at most max_hops stages.
 */
export function planStageDone(
  done: FinishedAttempt,
  output: Payload,
  nextStages: readonly string[],
  transitionId: () => string,
): StagePlan {
  const { stage } = done;
  const base = {
    taskId: done.taskId,
    expectedState: done.from,
    expectedAttempt: done.attempt,
    workerId: done.workerId,
    branchId: done.branchId,
  };
  if (stage.async && done.from === TaskState.TASK_STATE_RUNNING) {
    const token = asyncToken({
      taskId: done.taskId,
      stage: stage.name,
      attempt: done.attempt,
      branchId: done.branchId,
    });
    return {
      kind: 'waiting',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_WAITING,
          attempt: done.attempt,
          reason: REASONS.asyncWait,
          asyncToken: token,
        }),
      ],
      next: [],
    };
  }

  const undeclared = nextStages.filter((n) => !stage.nextSet.has(n));
  if (undeclared.length > 0) {
    const declared = stage.next.length > 0 ? stage.next.join(', ') : 'none';
    return failPlan(
      done,
      base,
      transitionId,
      REASONS.undeclaredNext,
      `stage ${stage.name} has no edge to ${undeclared.join(', ')} (declared: ${declared})`,
    );
  }
  const chosen = nextStages.length > 0 ? [...new Set(nextStages)] : stage.next;
  if (chosen.length === 0) {
    return {
      kind: 'succeeded',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_SUCCEEDED,
          attempt: done.attempt,
          reason:
            done.from === TaskState.TASK_STATE_WAITING ? REASONS.asyncCompleted : REASONS.completed,
          payload: output,
        }),
      ],
      next: [],
    };
  }
  if (done.hops + 1 >= done.pipeline.maxHops) {
    return failPlan(
      done,
      base,
      transitionId,
      REASONS.hopLimit,
      `the task ran ${done.hops + 1} stages, the most pipeline ${done.pipeline.name} allows (max_hops ${done.pipeline.maxHops})`,
    );
  }
  const next: NextStageTask[] = [];
  for (const name of chosen) {
    const s = done.pipeline.stages.get(name);
    if (s === undefined) {
      return failPlan(
        done,
        base,
        transitionId,
        REASONS.undeclaredNext,
        `stage ${name} is not a stage of pipeline ${done.pipeline.name} v${done.pipeline.version}`,
      );
    }
    next.push({ stage: s, input: output, hops: done.hops + 1 });
  }
  return {
    kind: next.length > 1 ? 'fanned-out' : 'advanced',
    writes: [
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        toState: TaskState.TASK_STATE_QUEUED,
        stage: chosen[0],
        attempt: 1,
        reason:
          done.from === TaskState.TASK_STATE_WAITING ? REASONS.asyncCompleted : REASONS.stageDone,
        payload: output,
        fanOutStages: chosen.slice(1),
      }),
    ],
    next,
  };
}

function failPlan(
  done: FinishedAttempt,
  base: {
    taskId: string;
    expectedState: TaskState;
    expectedAttempt: number;
    workerId: string;
    branchId: string;
  },
  transitionId: () => string,
  code: string,
  message: string,
): StagePlan {
  const error: TaskError = { code, message, retryable: false, details: {} };
  return {
    kind: 'failed',
    writes: [
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        toState: TaskState.TASK_STATE_FAILED,
        attempt: done.attempt,
        reason: code,
        error,
      }),
    ],
    next: [],
    error,
  };
}

/**
 * A PUBLISH stage runs without a worker: its input is published on the feed (the store puts it in
 * the transition) and the task moves on, QUEUED → QUEUED at the next stage with the same input,
 * or QUEUED → SUCCEEDED at a last stage. Several next stages fan out.
 */
export function planPublish(
  task: {
    readonly taskId: string;
    readonly branchId: string;
    readonly pipeline: CompiledPipeline;
    readonly stage: CompiledStage;
    readonly attempt: number;
    readonly hops: number;
    readonly input: Payload;
  },
  transitionId: () => string,
): StagePlan {
  const base = {
    taskId: task.taskId,
    expectedState: TaskState.TASK_STATE_QUEUED,
    expectedAttempt: task.attempt,
    branchId: task.branchId,
  };
  const { stage } = task;
  if (stage.next.length === 0) {
    return {
      kind: 'succeeded',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_SUCCEEDED,
          attempt: task.attempt,
          reason: REASONS.published,
        }),
      ],
      next: [],
    };
  }
  const fail = (code: string, message: string): StagePlan => {
    const error: TaskError = { code, message, retryable: false, details: {} };
    return {
      kind: 'failed',
      writes: [
        transitionWrite({
          ...base,
          transitionId: transitionId(),
          toState: TaskState.TASK_STATE_FAILED,
          attempt: task.attempt,
          reason: code,
          error,
        }),
      ],
      next: [],
      error,
    };
  };
  if (task.hops + 1 >= task.pipeline.maxHops) {
    return fail(
      REASONS.hopLimit,
      `the task ran ${task.hops + 1} stages, the most pipeline ${task.pipeline.name} allows (max_hops ${task.pipeline.maxHops})`,
    );
  }
  const next: NextStageTask[] = [];
  for (const name of stage.next) {
    const s = task.pipeline.stages.get(name);
    if (s === undefined) {
      return fail(REASONS.undeclaredNext, `stage ${name} is not a stage of ${task.pipeline.name}`);
    }
    next.push({ stage: s, input: task.input, hops: task.hops + 1 });
  }
  return {
    kind: next.length > 1 ? 'fanned-out' : 'advanced',
    writes: [
      transitionWrite({
        ...base,
        transitionId: transitionId(),
        toState: TaskState.TASK_STATE_QUEUED,
        stage: stage.next[0],
        attempt: 1,
        reason: REASONS.published,
        fanOutStages: stage.next.slice(1),
      }),
    ],
    next,
  };
}
