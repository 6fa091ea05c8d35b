import type { TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Payload, TaskError } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { asyncToken } from '../shared/async-token';
import { branchTaskId } from '../shared/branch-id';
import type { HeldTaskInit } from './held-task';
import type { CompiledPipeline, CompiledStage } from './pipeline-registry';
import { transitionWrite } from './transition-write';

/** The attempt a stage finished: where the task is, and what the stage made. */
export interface FinishedAttempt {
  readonly taskId: string;
  readonly pipeline: CompiledPipeline;
  readonly stage: CompiledStage;
  readonly attempt: number;
  readonly hops: number;
}

/** A task queued at its next stage by a plan, once the plan is committed. */
export interface NextStageTask {
  readonly stage: CompiledStage;
  readonly input: Payload;
  readonly hops: number;
}

/** The task a committed advance or fan-out moved: what the tasks it queued are held with. */
export interface MovedTask {
  readonly taskId: string;
  readonly parentTaskId: string;
  readonly pipeline: CompiledPipeline;
  readonly priority: number;
  readonly traceparent: string;
}

/**
 * The tasks an advance or fan-out of `moved` queued once committed (its outcome's `seq`): the
 * task at the first next stage, then each branch task the status service started, named by
 * branchTaskId, each at attempt 1 of its stage.
 */
export function queuedByPlan(
  moved: MovedTask,
  seq: number,
  next: readonly NextStageTask[],
): HeldTaskInit[] {
  return next.map((n, i) => ({
    taskId: i === 0 ? moved.taskId : branchTaskId(moved.taskId, seq, n.stage.name),
    parentTaskId: i === 0 ? moved.parentTaskId : moved.taskId,
    pipeline: moved.pipeline,
    stage: n.stage,
    attempt: 1,
    priority: moved.priority,
    hops: n.hops,
    traceparent: moved.traceparent,
    input: n.input,
    progress: undefined,
  }));
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

const NO_NEXT: NextStageTask[] = [];

/**
 * How a finished stage moves its task, from `from` (RUNNING for a worker's result, WAITING for
 * CompleteAsync, QUEUED for a PUBLISH stage). An ASYNC stage's worker result parks the task
 * WAITING for its token; otherwise `nextStages` choose among the declared edges (none: all of
 * them). No edge left: SUCCEEDED with the output. One: QUEUED there with the output as input.
 * Several: fan-out, the first in the write and the others as `fan_out_stages`. An undeclared
 * edge fails the task with UNDECLARED_NEXT_STAGE, and so does a next stage past the pipeline's
 * max_hops (HOP_LIMIT): a task runs at most max_hops stages.
 */
export function planStageDone(
  done: FinishedAttempt,
  from: TaskState,
  output: Payload,
  nextStages: readonly string[],
  workerId: string,
  transitionId: () => string,
): StagePlan {
  const { stage, taskId, attempt } = done;
  if (stage.async && from === TaskState.TASK_STATE_RUNNING) {
    const w = transitionWrite(
      transitionId(),
      taskId,
      from,
      attempt,
      TaskState.TASK_STATE_WAITING,
      attempt,
      '',
      workerId,
      REASONS.asyncWait,
    );
    w.asyncToken = asyncToken({ taskId, stage: stage.name, attempt });
    return { kind: 'waiting', writes: [w], next: NO_NEXT };
  }
  const moved =
    from === TaskState.TASK_STATE_WAITING
      ? REASONS.asyncCompleted
      : from === TaskState.TASK_STATE_QUEUED
        ? REASONS.published
        : REASONS.stageDone;
  let chosen = stage.next;
  if (nextStages.length > 0) {
    for (const n of nextStages) {
      if (!stage.nextSet.has(n)) {
        const declared = stage.next.length > 0 ? stage.next.join(', ') : 'none';
        return failPlan(
          done,
          from,
          workerId,
          transitionId,
          REASONS.undeclaredNext,
          `stage ${stage.name} has no edge to ${n} (declared: ${declared})`,
        );
      }
    }
    chosen = nextStages.length === 1 ? nextStages : [...new Set(nextStages)];
  }
  if (chosen.length === 0) {
    const w = transitionWrite(
      transitionId(),
      taskId,
      from,
      attempt,
      TaskState.TASK_STATE_SUCCEEDED,
      attempt,
      '',
      workerId,
      from === TaskState.TASK_STATE_RUNNING ? REASONS.completed : moved,
    );
    // A PUBLISH last stage ends with its input, which the store publishes as the output.
    if (from !== TaskState.TASK_STATE_QUEUED) w.payload = output;
    return { kind: 'succeeded', writes: [w], next: NO_NEXT };
  }
  if (done.hops + 1 >= done.pipeline.maxHops) {
    return failPlan(
      done,
      from,
      workerId,
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
        from,
        workerId,
        transitionId,
        REASONS.undeclaredNext,
        `stage ${name} is not a stage of pipeline ${done.pipeline.name} v${done.pipeline.version}`,
      );
    }
    next.push({ stage: s, input: output, hops: done.hops + 1 });
  }
  const w = transitionWrite(
    transitionId(),
    taskId,
    from,
    attempt,
    TaskState.TASK_STATE_QUEUED,
    1,
    chosen[0],
    workerId,
    moved,
  );
  // A PUBLISH stage passes its input on: the store reuses it, so it is not sent again.
  if (from !== TaskState.TASK_STATE_QUEUED) w.payload = output;
  if (chosen.length > 1) w.fanOutStages = chosen.slice(1);
  return { kind: next.length > 1 ? 'fanned-out' : 'advanced', writes: [w], next };
}

function failPlan(
  done: FinishedAttempt,
  from: TaskState,
  workerId: string,
  transitionId: () => string,
  code: string,
  message: string,
): StagePlan {
  const error: TaskError = { code, message, retryable: false, details: {} };
  const w = transitionWrite(
    transitionId(),
    done.taskId,
    from,
    done.attempt,
    TaskState.TASK_STATE_FAILED,
    done.attempt,
    '',
    workerId,
    code,
  );
  w.error = error;
  return { kind: 'failed', writes: [w], next: NO_NEXT, error };
}

/**
 * A PUBLISH stage runs without a worker: its input is published on the feed (the store puts it in
 * the transition) and the task moves on, QUEUED → QUEUED at the next stage with the same input,
 * or QUEUED → SUCCEEDED at a last stage. Several next stages fan out.
 */
export function planPublish(
  task: FinishedAttempt,
  input: Payload,
  transitionId: () => string,
): StagePlan {
  return planStageDone(task, TaskState.TASK_STATE_QUEUED, input, [], '', transitionId);
}
