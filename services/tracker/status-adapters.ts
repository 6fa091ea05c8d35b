import { ClientError, Status } from 'nice-grpc-common';
import type { TransitionOutcome, TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { TaskFilter } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { DsatClient } from '../shared/grpc-client';
import type { TaskStore } from './dead-letters';
import type { FeedSource } from './feed-follower';
import type { PipelineStore } from './pipeline-catalog';
import { TIMER_FIELD_MASK } from './timer-feed';

/** The status service as the tracker calls it. */
export type StatusClient = DsatClient<typeof StatusServiceDefinition>;

/**
 * The feed states the tracker folds in: all but SUBMITTED, which always comes with its QUEUED
 * (whose from_state SUBMITTED marks the create).
 */
export const FEED_STATES: readonly TaskState[] = [
  TaskState.TASK_STATE_QUEUED,
  TaskState.TASK_STATE_DISPATCHED,
  TaskState.TASK_STATE_RUNNING,
  TaskState.TASK_STATE_RETRY_WAIT,
  TaskState.TASK_STATE_WAITING,
  TaskState.TASK_STATE_TIMED_OUT,
  TaskState.TASK_STATE_SUCCEEDED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_DEAD_LETTERED,
  TaskState.TASK_STATE_CANCELLED,
];

const isCode = (err: unknown, code: Status) => err instanceof ClientError && err.code === code;

/** A resume point older than the feed's window: re-arm from records instead. */
export const isFeedGap = (err: unknown) => isCode(err, Status.OUT_OF_RANGE);

export function statusFeedSource(client: StatusClient): FeedSource {
  return {
    async listUnfinished(pageToken, signal) {
      const res = await client.listUnfinishedTasks({ pageSize: 5_000, pageToken }, { signal });
      return {
        tasks: res.tasks,
        nextPageToken: res.nextPageToken,
        revision: res.revision,
        readAtMs: res.readAt?.getTime(),
      };
    },
    async *watch(fromRevision, signal) {
      const filter: TaskFilter = {
        states: [...FEED_STATES],
        pipeline: '',
        stage: '',
        actionKey: '',
      };
      const watch = client.watchEvents(
        { filter, fromRevision, transitionMask: [...TIMER_FIELD_MASK] },
        { signal },
      );
      for await (const res of watch) {
        yield { transitions: res.transitions, revision: res.revision };
      }
    },
  };
}

/** One `CommitTransitions` call: idempotent by transition id, so its retries are safe. */
export function statusCommit(
  client: StatusClient,
): (writes: TransitionWrite[]) => Promise<TransitionOutcome[]> {
  return async (writes) => (await client.commitTransitions({ writes })).outcomes;
}

export function statusPipelineStore(client: StatusClient): PipelineStore {
  return {
    async get(name, version) {
      try {
        return (await client.getPipeline({ name, version })).pipeline;
      } catch (err) {
        if (isCode(err, Status.NOT_FOUND)) return undefined;
        throw err;
      }
    },
    async save(pipeline) {
      const res = await client.savePipeline({ pipeline });
      if (res.pipeline === undefined) throw new Error('the status service saved no pipeline');
      return { pipeline: res.pipeline, changed: res.changed };
    },
    async list(pageSize, pageToken) {
      return client.listPipelines({ pageSize, pageToken });
    },
  };
}

export function statusTaskStore(client: StatusClient): TaskStore {
  return {
    async get(taskId) {
      try {
        return (await client.getTask({ taskId })).task;
      } catch (err) {
        if (isCode(err, Status.NOT_FOUND)) return undefined;
        throw err;
      }
    },
    async list(filter, pageSize, pageToken) {
      return client.listTasks({ filter, pageSize, pageToken });
    },
    async delete(taskIds, filter) {
      return (await client.deleteTasks({ taskIds: [...taskIds], filter })).deletedCount;
    },
  };
}
