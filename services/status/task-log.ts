import {
  TaskState,
  type Payload,
  type Task,
  type TaskBranch,
  type TaskError,
  type TaskProgress,
  type Transition,
} from '../../gen/dsat/task/v1/task';
import { traceIdOf as traceIdOfValid } from '../shared/traceparent';

/**
 * One entry of a task's transition log, as the store keeps it. A task record is the fold of its
 * entries with `foldEntry`, both when a write is applied and when a record is rebuilt at open.
 */
export interface LogEntry {
  readonly revision: number;
  readonly seq: number;
  readonly from: TaskState;
  readonly to: TaskState;
  readonly stage: string;
  readonly attempt: number;
  readonly workerId: string;
  readonly reason: string;
  readonly atMs: number;
  readonly transitionId: string;
  readonly error: TaskError | undefined;
  /** The payload a PUBLISH stage published, or the final output on SUCCEEDED. */
  readonly payload: Payload | undefined;
  /**
   * The next stage's input on a stage change. Stage changes are milestones, so the input is
   * stored once, in the task record put by the same batch, never in the feed.
   */
  readonly input: Payload | undefined;
  /** The worker's last progress; it rides in the feed and the record, not in the history. */
  readonly progress: TaskProgress | undefined;
  /** The CompleteAsync token, on a move to WAITING. */
  readonly asyncToken: string;
  /** The branches a fan-out started with this entry (each a new task), else undefined. */
  readonly branches: readonly TaskBranch[] | undefined;
}

/** What a create write fixes for the task's whole life. */
export interface TaskIdentity {
  readonly taskId: string;
  readonly pipeline: string;
  readonly pipelineVersion: number;
  readonly traceparent: string;
  readonly priority: number;
  readonly idempotencyKey: string;
  /** The task whose fan-out started this one, '' for a submitted task. */
  readonly parentTaskId: string;
  /** The stages passed before this task started: a branch goes on counting its parent's. */
  readonly hops: number;
}

/** The task as its SUBMITTED entry leaves it. */
export function startTask(
  identity: TaskIdentity,
  submitted: LogEntry,
  input: Payload | undefined,
): Task {
  const at = new Date(submitted.atMs);
  return {
    taskId: identity.taskId,
    pipeline: identity.pipeline,
    pipelineVersion: identity.pipelineVersion,
    stage: submitted.stage,
    state: submitted.to,
    attempt: submitted.attempt,
    seq: submitted.seq,
    revision: submitted.revision,
    input,
    output: undefined,
    traceId: traceIdOf(identity.traceparent),
    traceparent: identity.traceparent,
    lastError: undefined,
    createdAt: at,
    updatedAt: at,
    priority: identity.priority,
    idempotencyKey: identity.idempotencyKey,
    hops: identity.hops,
    branches: [],
    progress: undefined,
    asyncToken: '',
    workerId: submitted.workerId,
    parentTaskId: identity.parentTaskId,
  };
}

/** The task after one more entry of its log. Never mutates `task`. */
export function foldEntry(task: Task, e: LogEntry, at: Date = new Date(e.atMs)): Task {
  const stageDone = e.stage !== task.stage;
  const finished = e.to === TaskState.TASK_STATE_SUCCEEDED;
  // Every field spelled out: V8 copies a literal much faster than a spread with overrides.
  return {
    taskId: task.taskId,
    pipeline: task.pipeline,
    pipelineVersion: task.pipelineVersion,
    stage: e.stage,
    state: e.to,
    attempt: e.attempt,
    seq: e.seq,
    revision: e.revision,
    input: stageDone ? e.input : task.input,
    output: finished ? e.payload : task.output,
    traceId: task.traceId,
    traceparent: task.traceparent,
    lastError: e.error ?? (stageDone ? undefined : task.lastError),
    createdAt: task.createdAt,
    updatedAt: at,
    priority: task.priority,
    idempotencyKey: task.idempotencyKey,
    hops: stageDone || finished ? task.hops + 1 : task.hops,
    branches: e.branches === undefined ? task.branches : [...task.branches, ...e.branches],
    progress: e.progress ?? (stageDone ? undefined : task.progress),
    asyncToken: e.to === TaskState.TASK_STATE_WAITING ? e.asyncToken : '',
    workerId: e.workerId === '' ? task.workerId : e.workerId,
    parentTaskId: task.parentTaskId,
  };
}

/**
 * `foldEntry` in place, for a task object no one else can see yet (one staged by the commit
 * being built), so that several writes to a task in one commit allocate one record.
 */
export function foldEntryInto(task: Task, e: LogEntry, at: Date): Task {
  const stageDone = e.stage !== task.stage;
  const finished = e.to === TaskState.TASK_STATE_SUCCEEDED;
  if (stageDone) {
    task.input = e.input;
    task.hops++;
    task.lastError = undefined;
    task.progress = undefined;
  } else if (finished) {
    task.hops++;
  }
  if (finished) task.output = e.payload;
  if (e.error !== undefined) task.lastError = e.error;
  if (e.progress !== undefined) task.progress = e.progress;
  task.stage = e.stage;
  task.state = e.to;
  task.attempt = e.attempt;
  task.seq = e.seq;
  task.revision = e.revision;
  task.updatedAt = at;
  task.asyncToken = e.to === TaskState.TASK_STATE_WAITING ? e.asyncToken : '';
  if (e.workerId !== '') task.workerId = e.workerId;
  if (e.branches !== undefined) task.branches = [...task.branches, ...e.branches];
  return task;
}

export function toTransition(
  task: {
    readonly taskId: string;
    readonly pipeline: string;
    readonly traceId: string;
    readonly parentTaskId: string;
  },
  e: LogEntry,
  at: Date = new Date(e.atMs),
): Transition {
  return {
    revision: e.revision,
    taskId: task.taskId,
    seq: e.seq,
    fromState: e.from,
    toState: e.to,
    stage: e.stage,
    attempt: e.attempt,
    workerId: e.workerId,
    reason: e.reason,
    at,
    pipeline: task.pipeline,
    traceId: task.traceId,
    error: e.error,
    payload: e.payload,
    transitionId: e.transitionId,
    parentTaskId: task.parentTaskId,
  };
}

/** The 32-hex trace id of a W3C traceparent, or '' when there is none. */
export function traceIdOf(traceparent: string): string {
  return traceIdOfValid(traceparent) ?? '';
}

export function isTraceparent(value: string): boolean {
  return traceIdOfValid(value) !== undefined;
}

/** A task as the store holds it in memory: its record (the fold) and its whole log. */
export interface TaskSlot {
  readonly task: Task;
  /** The whole log, in memory. The stored record embeds `log[0 .. embedded)`; the feed has the rest. */
  readonly log: readonly LogEntry[];
  readonly embedded: number;
  /** The revision at which the task (re)became live: the order of ListUnfinishedTasks. */
  readonly liveRev: number;
}

/** The revision at which the task last became live: its create, or its latest redrive. */
export function liveRevOf(log: readonly LogEntry[]): number {
  for (let i = log.length - 1; i >= 0; i--) {
    const e = log[i] as LogEntry;
    if (
      e.from === TaskState.TASK_STATE_UNSPECIFIED ||
      e.from === TaskState.TASK_STATE_DEAD_LETTERED
    ) {
      return e.revision;
    }
  }
  return 0;
}
