import type { Task } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { DsatError, failedPrecondition, notFound } from '../shared/errors';
import { checkTaskId } from '../shared/task-id';
import type { Dispatcher } from './dispatcher';
import { CANCEL_REASONS } from './dispatcher';
import type { StatusWriter } from './status-writer';
import type { TransitionIds } from './transition-write';
import { stateName, TERMINAL, transitionWrite } from './transition-write';

export interface TaskCancelOptions {
  readonly writer: StatusWriter;
  readonly ids: TransitionIds;
  readonly dispatcher: Dispatcher;
  readonly readTask: (taskId: string) => Promise<Task | undefined>;
}

const ATTEMPTS = 5;

/**
 * CancelTask: a compare-and-set from the state the task is in to CANCELLED, tried again when the
 * task moved in between. The router that holds the task learns it from the feed (or here, when it
 * is this one) and tells the worker, whose handler sees its signal aborted. A fan-out's branches
 * are tasks of their own and are cancelled with it, also after the task itself ended.
 */
export async function cancelTask(
  options: TaskCancelOptions,
  taskId: string,
  reason: string,
): Promise<Task> {
  // The status service's own rule, so that its refusal never reaches the caller as our INTERNAL.
  checkTaskId(taskId);
  const why = reason.slice(0, 1024);
  const task = await options.readTask(taskId);
  if (task === undefined) throw notFound('task', taskId, 'task_id');
  const liveBranches = await cancelBranches(options, task, why);
  try {
    return await cancelOne(options, task, why);
  } catch (err) {
    // A task that ended with branches still live: cancelling those was the whole cancel.
    if (liveBranches > 0 && isFinished(err)) return (await options.readTask(taskId)) ?? task;
    throw err;
  }
}

const isFinished = (err: unknown) => err instanceof DsatError && err.reason === 'TASK_FINISHED';

/** Cancels the live branches of `task` and theirs; returns how many were live. */
async function cancelBranches(
  options: TaskCancelOptions,
  task: Task,
  why: string,
): Promise<number> {
  let live = 0;
  for (const b of task.branches) {
    const branch = await options.readTask(b.branchId);
    if (branch === undefined) continue;
    live += await cancelBranches(options, branch, why);
    if (TERMINAL.has(branch.state)) continue;
    live++;
    try {
      await cancelOne(options, branch, why);
    } catch (err) {
      // It ended on its own in between: nothing left to cancel.
      if (!isFinished(err)) throw err;
    }
  }
  return live;
}

async function cancelOne(options: TaskCancelOptions, first: Task, why: string): Promise<Task> {
  const taskId = first.taskId;
  let task: Task | undefined = first;
  for (let i = 0; i < ATTEMPTS; i++) {
    if (i > 0) task = await options.readTask(taskId);
    if (task === undefined) throw notFound('task', taskId, 'task_id');
    if (task.state === TaskState.TASK_STATE_CANCELLED) return task;
    if (TERMINAL.has(task.state)) {
      throw failedPrecondition(
        'TASK_FINISHED',
        `task ${taskId} already ended ${stateName(task.state)}`,
        {
          task_id: taskId,
          state: stateName(task.state),
        },
      );
    }
    const w = transitionWrite(
      options.ids.next(),
      taskId,
      task.state,
      task.attempt,
      TaskState.TASK_STATE_CANCELLED,
      task.attempt,
      '',
      '',
      CANCEL_REASONS.requested,
    );
    w.error = { code: 'CANCELLED', message: why, retryable: false, details: {} };
    const [o] = await options.writer.commit([w]);
    if (o!.code === 0) {
      options.dispatcher.drop(taskId, CANCEL_REASONS.requested);
      return (await options.readTask(taskId)) ?? { ...task, state: TaskState.TASK_STATE_CANCELLED };
    }
    if (o!.code !== 9) {
      throw new DsatError(
        'UNAVAILABLE',
        o!.reason || 'CANCEL_FAILED',
        `cannot cancel task ${taskId}: ${o!.message}`,
      );
    }
  }
  throw new DsatError('ABORTED', 'TASK_BUSY', `task ${taskId} kept moving; try the cancel again`, {
    metadata: { task_id: taskId },
  });
}
