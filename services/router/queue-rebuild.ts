import type { ListUnfinishedTasksResponse } from '../../gen/dsat/status/v1/status';
import type { Task } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { Logger } from '../shared/logger';
import type { Dispatcher } from './dispatcher';
import type { HeldTaskInit } from './held-task';
import type { PipelineRegistry } from './pipeline-registry';
import { FAILURE_REASONS } from './retry-policy';

export interface QueueRebuildOptions {
  /** One page of ListUnfinishedTasks for the router's stages (empty: every stage). */
  readonly listPage: (pageToken: string) => Promise<ListUnfinishedTasksResponse>;
  readonly pipelines: PipelineRegistry;
  readonly dispatcher: Dispatcher;
  readonly serves: (stage: string) => boolean;
  readonly logger: Logger;
}

export interface RebuildReport {
  /** The store's revision when the first page was read: the feed resumes from here. */
  readonly revision: number;
  readonly queued: number;
  /** Attempts found DISPATCHED or RUNNING, which no live stream runs: queued again. */
  readonly requeued: number;
}

/**
 * Rebuilds the ready queues from the store when a router starts. QUEUED tasks are held as they
 * are. Tasks found DISPATCHED or RUNNING belong to no live stream (the streams died with the last
 * router process), so they are queued again with attempt + 1 and reason ROUTER_RESTART, or
 * dead-lettered when that was their last attempt. WAITING, RETRY_WAIT and TIMED_OUT tasks are the
 * business of CompleteAsync and the tracker.
 */
export async function rebuildQueues(options: QueueRebuildOptions): Promise<RebuildReport> {
  let token = '';
  let revision: number | undefined;
  let queued = 0;
  let requeued = 0;
  do {
    const page = await options.listPage(token);
    revision ??= page.revision;
    for (const task of page.tasks) {
      const r = await adopt(options, task);
      if (r === 'queued') queued++;
      else if (r === 'requeued') requeued++;
    }
    token = page.nextPageToken;
  } while (token !== '');
  options.logger.info({ revision, queued, requeued }, 'ready queues rebuilt from the store');
  return { revision: revision ?? 0, queued, requeued };
}

async function adopt(
  options: QueueRebuildOptions,
  task: Task,
): Promise<'queued' | 'requeued' | 'skipped'> {
  const running =
    task.state === TaskState.TASK_STATE_DISPATCHED || task.state === TaskState.TASK_STATE_RUNNING;
  if (task.state !== TaskState.TASK_STATE_QUEUED && !running) return 'skipped';
  if (!options.serves(task.stage)) return 'skipped';
  let init: HeldTaskInit;
  try {
    const pipeline = await options.pipelines.version(task.pipeline, task.pipelineVersion);
    const stage = pipeline.stages.get(task.stage);
    if (!stage)
      throw new Error(`stage ${task.stage} is not in ${task.pipeline} v${task.pipelineVersion}`);
    init = {
      taskId: task.taskId,
      pipeline,
      stage,
      attempt: task.attempt,
      priority: task.priority,
      hops: task.hops,
      traceparent: task.traceparent,
      input: task.input,
      progress: task.progress,
      parentTaskId: task.parentTaskId,
    };
  } catch (err) {
    options.logger.error(
      { err, taskId: task.taskId },
      'cannot rebuild a task: its pipeline is unreadable',
    );
    return 'skipped';
  }
  if (!running) {
    options.dispatcher.enqueue(init);
    return 'queued';
  }
  options.dispatcher.adopt(
    init,
    task.state as TaskState.TASK_STATE_RUNNING | TaskState.TASK_STATE_DISPATCHED,
    FAILURE_REASONS.routerRestart,
  );
  return 'requeued';
}
