import crypto from 'node:crypto';
import type { CompleteAsyncRequest, CompleteAsyncResponse } from '../../gen/dsat/router/v1/router';
import type { Task, TaskError } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { parseAsyncToken } from '../shared/async-token';
import { checkContentType } from '../shared/content-types';
import { DsatError, failedPrecondition, invalidArgument } from '../shared/errors';
import { NAME_PATTERN as NAME } from '../shared/pipeline-validation';
import { isTaskId } from '../shared/task-id';
import { errorViolation } from '../shared/task-limits';
import type { HeldTaskInit } from './held-task';
import type { PipelineRegistry } from './pipeline-registry';
import type { StagePlan } from './stage-routing';
import { planStageDone, queuedByPlan, REASONS } from './stage-routing';
import type { StatusWriter } from './status-writer';
import { checkPayloadSize } from './task-intake';
import type { TransitionIds } from './transition-write';
import { stateName, transitionWrite } from './transition-write';

export interface AsyncCompletionOptions {
  readonly writer: StatusWriter;
  readonly ids: TransitionIds;
  readonly pipelines: PipelineRegistry;
  readonly readTask: (taskId: string) => Promise<Task | undefined>;
  readonly maxPayloadSize: number;
  /** Holds or forwards the task queued at its next stage. */
  readonly accept: (task: HeldTaskInit) => void;
}

/**
 * The write of a completion has an identifier derived from the token, so a retried
 * CompleteAsync whose answer was lost is answered OK again instead of refused.
 */
function completionId(token: string): string {
  const id = `async:${token}`;
  return id.length <= 128 ? id : `async:${crypto.createHash('sha256').update(token).digest('hex')}`;
}

/**
 * CompleteAsync: the outside system's answer resumes a task WAITING at an ASYNC stage. Its output
 * becomes the next stage's input (or the final output), exactly as a worker's result would; an
 * error fails the task. Nested ASYNC work resumes last in, first out because each waiting task
 * waits on its own token: an inner task's completion is what lets the outer one be completed.
 */
export async function completeAsync(
  options: AsyncCompletionOptions,
  req: CompleteAsyncRequest,
): Promise<CompleteAsyncResponse> {
  const parts = parseAsyncToken(req.token);
  if (parts === undefined) throw invalidArgument('token', 'is not an async token of this mesh');
  // The status service's rules for what the token names: its refusal would be our INTERNAL.
  if (!isTaskId(parts.taskId)) {
    throw invalidArgument('token', 'names a task id that is not 1 to 128 of [A-Za-z0-9._:-]');
  }
  if (!NAME.test(parts.stage)) throw invalidArgument('token', 'names no valid stage');
  if (req.error !== undefined) {
    const bad = errorViolation(req.error, 'error');
    if (bad !== undefined) throw invalidArgument(bad.field, bad.description);
  }
  const contentType = checkContentType(req.contentType);
  checkPayloadSize(req.output.length, options.maxPayloadSize, 'output');
  const task = await options.readTask(parts.taskId);
  if (task === undefined) {
    throw new DsatError(
      'NOT_FOUND',
      'ASYNC_TOKEN_UNKNOWN',
      `no task waits for token ${req.token}`,
      {
        field: 'token',
      },
    );
  }
  const pipeline = await options.pipelines.version(task.pipeline, task.pipelineVersion);
  const stage = pipeline.stages.get(parts.stage);
  if (stage === undefined || !stage.async) {
    throw invalidArgument(
      'token',
      `stage ${parts.stage} is not an ASYNC stage of ${pipeline.name}`,
    );
  }
  let first = true;
  const ids = () => {
    if (!first) return options.ids.next();
    first = false;
    return completionId(req.token);
  };
  let plan: StagePlan;
  if (req.error !== undefined) {
    const error: TaskError = {
      code: req.error.code || 'ASYNC_ERROR',
      message: req.error.message,
      retryable: false,
      details: req.error.details,
    };
    const w = transitionWrite(
      ids(),
      parts.taskId,
      TaskState.TASK_STATE_WAITING,
      parts.attempt,
      TaskState.TASK_STATE_FAILED,
      parts.attempt,
      '',
      '',
      REASONS.asyncFailed,
    );
    w.error = error;
    plan = { kind: 'failed', writes: [w], next: [], error };
  } else {
    plan = planStageDone(
      {
        taskId: parts.taskId,
        pipeline,
        stage,
        attempt: parts.attempt,
        hops: task.hops,
      },
      TaskState.TASK_STATE_WAITING,
      { data: req.output, contentType },
      [],
      '',
      ids,
    );
  }
  const outcomes = await options.writer.commit(plan.writes);
  const o = outcomes[0]!;
  if (o.code !== 0) {
    if (o.code === 9) {
      throw failedPrecondition(
        'ASYNC_TOKEN_STALE',
        `token ${req.token} no longer matches: the task is ${stateName(task.state)} at ${task.stage}`,
        { task_id: parts.taskId, state: stateName(task.state) },
      );
    }
    throw new DsatError(
      'UNAVAILABLE',
      o.reason || 'COMPLETE_FAILED',
      `cannot complete: ${o.message}`,
    );
  }
  if (o.duplicate) {
    const now = await options.readTask(parts.taskId);
    return { taskId: parts.taskId, state: now?.state ?? TaskState.TASK_STATE_UNSPECIFIED };
  }
  if (plan.kind === 'advanced' || plan.kind === 'fanned-out') {
    const moved = {
      taskId: parts.taskId,
      parentTaskId: task.parentTaskId,
      pipeline,
      priority: task.priority,
      traceparent: task.traceparent,
    };
    for (const init of queuedByPlan(moved, o.seq, plan.next)) options.accept(init);
  }
  return { taskId: parts.taskId, state: plan.writes[0]!.toState };
}
