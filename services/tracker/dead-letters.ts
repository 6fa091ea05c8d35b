import { TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Task, TaskFilter } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { invalidArgument } from '../shared/errors';
import { checkPageToken } from '../shared/page-token';
import { compileFilter } from '../status/task-filter';
import { checkTaskId } from '../shared/task-id';
import { trackerTransitionId } from './timers';
import type { TransitionSink } from './transition-sink';

/** Task records as the tracker reads and deletes them: `GetTask`, `ListTasks`, `DeleteTasks`. */
export interface TaskStore {
  get(taskId: string): Promise<Task | undefined>;
  list(
    filter: TaskFilter,
    pageSize: number,
    pageToken: string,
  ): Promise<{ tasks: Task[]; nextPageToken: string }>;
  /** Deletes terminal tasks; unfinished ones among them are left alone. */
  delete(taskIds: readonly string[], filter: TaskFilter | undefined): Promise<number>;
}

export const REDRIVE_REASON = 'REDRIVE';

const TERMINAL_STATES: readonly TaskState[] = [
  TaskState.TASK_STATE_SUCCEEDED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_DEAD_LETTERED,
  TaskState.TASK_STATE_CANCELLED,
];

export interface DeadLetters {
  list(req: {
    pipeline: string;
    stage: string;
    pageSize: number;
    pageToken: string;
  }): Promise<{ tasks: Task[]; nextPageToken: string }>;
  /** DEAD_LETTERED → QUEUED at the stage it died, attempt 1, reason REDRIVE. Returns the ids queued. */
  redrive(taskIds: readonly string[], filter: TaskFilter | undefined): Promise<string[]>;
  /** Deletes terminal tasks; an empty request is refused. Returns how many were deleted. */
  purge(taskIds: readonly string[], filter: TaskFilter | undefined): Promise<number>;
}

export interface DeadLettersOptions {
  readonly tasks: TaskStore;
  readonly sink: TransitionSink;
  /** Tells the timers which pipeline version a redriven task runs, before its QUEUED arrives. */
  readonly pin?: (taskId: string, version: number) => void;
  /** Redrive writes per store batch. Default 500. */
  readonly batch?: number;
}

const isEmptyFilter = (f: TaskFilter | undefined) =>
  f === undefined ||
  (f.states.length === 0 && f.pipeline === '' && f.stage === '' && f.actionKey === '');

/**
 * The status service's rules for ids and filters, checked before any read or write: its refusal
 * of a redrive's listing would otherwise be our INTERNAL, after part of the work was done.
 */
function checkRequest(taskIds: readonly string[], filter: TaskFilter | undefined): void {
  taskIds.forEach((id, i) => checkTaskId(id, `task_ids[${i}]`));
  if (filter !== undefined) compileFilter(filter);
}

/** The dead-letter queue: listing, redriving and purging, over the status store. */
export function createDeadLetters(options: DeadLettersOptions): DeadLetters {
  const { tasks, sink } = options;
  const batch = options.batch ?? 500;

  const matching = async (filter: TaskFilter): Promise<Task[]> => {
    const out: Task[] = [];
    let token = '';
    do {
      const page = await tasks.list(filter, 1000, token);
      out.push(...page.tasks);
      token = page.nextPageToken;
    } while (token !== '');
    return out;
  };

  const redriveWrite = (t: Task): TransitionWrite =>
    TransitionWrite.fromPartial({
      transitionId: trackerTransitionId('redrive', t.taskId, t.revision),
      taskId: t.taskId,
      expectedState: TaskState.TASK_STATE_DEAD_LETTERED,
      expectedAttempt: t.attempt,
      toState: TaskState.TASK_STATE_QUEUED,
      stage: t.stage,
      attempt: 1,
      reason: REDRIVE_REASON,
    });

  return {
    async list(req) {
      checkPageToken(req.pageToken);
      return tasks.list(
        {
          states: [TaskState.TASK_STATE_DEAD_LETTERED],
          pipeline: req.pipeline,
          stage: req.stage,
          actionKey: '',
        },
        req.pageSize || 100,
        req.pageToken,
      );
    },

    async redrive(taskIds, filter) {
      checkRequest(taskIds, filter);
      if (taskIds.length === 0 && isEmptyFilter(filter)) {
        throw invalidArgument(
          'task_ids',
          'name the tasks to redrive, or a filter (pipeline, stage) of dead-lettered tasks',
        );
      }
      filter?.states.forEach((s, i) => {
        if (s !== TaskState.TASK_STATE_DEAD_LETTERED) {
          throw invalidArgument(`filter.states[${i}]`, 'only dead-lettered tasks can be redriven');
        }
      });
      const byId = new Map<string, Task>();
      const found = await Promise.all([...new Set(taskIds)].map((id) => tasks.get(id)));
      for (const t of found) if (t !== undefined) byId.set(t.taskId, t);
      if (!isEmptyFilter(filter) && filter !== undefined) {
        const f = { ...filter, states: [TaskState.TASK_STATE_DEAD_LETTERED] };
        for (const t of await matching(f)) byId.set(t.taskId, t);
      }
      const targets = [...byId.values()].filter(
        (t) => t.state === TaskState.TASK_STATE_DEAD_LETTERED,
      );
      const queued: string[] = [];
      for (let i = 0; i < targets.length; i += batch) {
        const chunk = targets.slice(i, i + batch);
        for (const t of chunk) options.pin?.(t.taskId, t.pipelineVersion);
        const outcomes = await sink.commit(chunk.map(redriveWrite));
        outcomes.forEach((o, k) => {
          if (o.code === 0) queued.push((chunk[k] as Task).taskId);
        });
      }
      return queued;
    },

    async purge(taskIds, filter) {
      checkRequest(taskIds, filter);
      if (taskIds.length === 0 && isEmptyFilter(filter)) {
        throw invalidArgument(
          'filter',
          'an empty request would purge every terminal task; name task ids or a filter',
          'EMPTY_PURGE',
        );
      }
      filter?.states.forEach((s, i) => {
        if (!TERMINAL_STATES.includes(s)) {
          throw invalidArgument(
            `filter.states[${i}]`,
            'only terminal tasks (SUCCEEDED, FAILED, DEAD_LETTERED, CANCELLED) can be purged',
          );
        }
      });
      const f =
        filter === undefined || isEmptyFilter(filter)
          ? undefined
          : { ...filter, states: filter.states.length > 0 ? filter.states : [...TERMINAL_STATES] };
      return tasks.delete(taskIds, f);
    },
  };
}
