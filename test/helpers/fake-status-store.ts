import type { TransitionOutcome, TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Task, TaskError, TaskFilter, Transition } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { TERMINAL_STATES, transitionRule } from '../../services/status/task-state-machine';

const S = TaskState;

/*
 * Legality comes from the status store's own table, so this stand-in for the tracker's unit tests
 * cannot drift from it.
 */
const isLegal = (from: TaskState, to: TaskState) => transitionRule(from, to) !== undefined;
const TERMINAL = new Set(TERMINAL_STATES);

export function emptyTask(taskId: string): Task {
  return {
    taskId,
    pipeline: '',
    pipelineVersion: 0,
    stage: '',
    state: S.TASK_STATE_UNSPECIFIED,
    attempt: 0,
    seq: 0,
    revision: 0,
    input: undefined,
    output: undefined,
    traceId: '',
    traceparent: '',
    lastError: undefined,
    createdAt: undefined,
    updatedAt: undefined,
    priority: 0,
    idempotencyKey: '',
    hops: 0,
    branches: [],
    progress: undefined,
    asyncToken: '',
    workerId: '',
    parentTaskId: '',
  };
}

export interface MoveOptions {
  readonly stage?: string;
  readonly attempt?: number;
  readonly reason?: string;
  readonly error?: TaskError;
}

/**
 * An in-memory status store for unit tests: compare-and-set on (state, attempt), the stage named
 * by a write must be the task's unless the task moves on to QUEUED elsewhere, the lifecycle's
 * legal edges only, one feed of transitions with revisions, and the task log.
 */
export class FakeStatusStore {
  readonly tasks = new Map<string, Task>();
  readonly feed: Transition[] = [];
  readonly writes: TransitionWrite[] = [];
  private readonly applied = new Set<string>();
  private readonly listeners: ((t: Transition[]) => void)[] = [];
  revision = 0;
  /** When set, commit rejects as if the store were unreachable. */
  down = false;
  private held: Transition[] | undefined;

  constructor(private readonly wallMs: () => number = Date.now) {}

  subscribe(listener: (t: Transition[]) => void): void {
    this.listeners.push(listener);
  }

  /** Holds the feed back from subscribers (a slow feed) until `releaseFeed`. */
  holdFeed(): void {
    this.held ??= [];
  }

  releaseFeed(): void {
    const held = this.held ?? [];
    this.held = undefined;
    this.publish(held);
  }

  history(taskId: string): Transition[] {
    return this.feed.filter((t) => t.taskId === taskId);
  }

  /** SUBMITTED then QUEUED at `stage`, attempt 1. */
  create(taskId: string, pipeline: string, version: number, stage: string): Transition[] {
    const task: Task = {
      ...emptyTask(taskId),
      pipeline,
      pipelineVersion: version,
      stage,
      attempt: 1,
      createdAt: new Date(this.wallMs()),
    };
    this.tasks.set(taskId, task);
    const out = [
      this.record(task, S.TASK_STATE_SUBMITTED, 'SUBMITTED', undefined),
      this.record(task, S.TASK_STATE_QUEUED, 'QUEUED', undefined),
    ];
    this.publish(out);
    return out;
  }

  /** A write as the router would make it, expecting the task's current state and attempt. */
  move(taskId: string, toState: TaskState, options: MoveOptions = {}): TransitionOutcome {
    const task = this.tasks.get(taskId);
    if (task === undefined) throw new Error(`no task ${taskId}`);
    const [outcome] = this.apply([
      {
        transitionId: `router-${this.writes.length}`,
        taskId,
        expectedState: task.state,
        expectedAttempt: task.attempt,
        toState,
        stage: options.stage ?? '',
        attempt: options.attempt ?? 0,
        workerId: 'w1',
        reason: options.reason ?? '',
        error: options.error,
        payload: undefined,
        progress: undefined,
        create: undefined,
        asyncToken: toState === S.TASK_STATE_WAITING ? 'token' : '',
        fanOutStages: [],
      },
    ]);
    if (outcome?.code !== 0) throw new Error(`router write refused: ${outcome?.message}`);
    return outcome;
  }

  async commit(writes: TransitionWrite[]): Promise<TransitionOutcome[]> {
    if (this.down) throw new Error('store unreachable');
    return this.apply(writes);
  }

  apply(writes: TransitionWrite[]): TransitionOutcome[] {
    const out: Transition[] = [];
    const outcomes = writes.map((w) => {
      this.writes.push(w);
      const refuse = (code: number, reason: string, message: string): TransitionOutcome => ({
        transitionId: w.transitionId,
        taskId: w.taskId,
        code,
        reason,
        message,
        revision: 0,
        seq: 0,
        duplicate: false,
      });
      if (this.applied.has(w.transitionId)) {
        return { ...refuse(0, '', ''), duplicate: true };
      }
      const task = this.tasks.get(w.taskId);
      if (task === undefined) return refuse(5, 'TASK_NOT_FOUND', `no task ${w.taskId}`);
      if (w.expectedAttempt !== 0 && w.expectedAttempt !== task.attempt) {
        return refuse(9, 'STALE_ATTEMPT', `task is at attempt ${task.attempt}`);
      }
      if (w.expectedState !== task.state) {
        return refuse(9, 'STATE_MISMATCH', `task is ${S[task.state]}`);
      }
      if (!isLegal(task.state, w.toState)) {
        return refuse(9, 'ILLEGAL_TRANSITION', `${S[task.state]} → ${S[w.toState]}`);
      }
      const advance = w.stage !== '' && w.stage !== task.stage;
      if (advance && w.toState !== S.TASK_STATE_QUEUED) {
        return refuse(3, 'INVALID_FIELD', `stage: the task is at ${task.stage}, not ${w.stage}`);
      }
      if (advance) task.stage = w.stage;
      if (w.attempt !== 0) task.attempt = w.attempt;
      else if (advance) task.attempt = 1;
      if (w.error !== undefined) task.lastError = w.error;
      this.applied.add(w.transitionId);
      const t = this.record(task, w.toState, w.reason, w.error, w.transitionId);
      out.push(t);
      return { ...refuse(0, '', ''), revision: t.revision, seq: t.seq };
    });
    this.publish(out);
    return outcomes;
  }

  listUnfinished(): Task[] {
    return [...this.tasks.values()].filter((t) => !TERMINAL.has(t.state)).map((t) => ({ ...t }));
  }

  list(filter: TaskFilter): Task[] {
    return [...this.tasks.values()].filter(
      (t) =>
        (filter.states.length === 0 || filter.states.includes(t.state)) &&
        (filter.pipeline === '' || filter.pipeline === t.pipeline) &&
        (filter.stage === '' || filter.stage === t.stage),
    );
  }

  private record(
    task: Task,
    to: TaskState,
    reason: string,
    error: TaskError | undefined,
    transitionId = '',
  ): Transition {
    const t: Transition = {
      revision: ++this.revision,
      taskId: task.taskId,
      seq: task.seq + 1,
      fromState: task.state,
      toState: to,
      stage: task.stage,
      attempt: task.attempt,
      workerId: '',
      reason,
      at: new Date(this.wallMs()),
      pipeline: task.pipeline,
      traceId: '',
      error,
      payload: undefined,
      transitionId,
      parentTaskId: '',
    };
    task.state = to;
    task.seq = t.seq;
    task.revision = t.revision;
    task.updatedAt = t.at;
    this.feed.push(t);
    return t;
  }

  private publish(transitions: Transition[]): void {
    if (transitions.length === 0) return;
    if (this.held !== undefined) {
      this.held.push(...transitions);
      return;
    }
    for (const l of this.listeners) l(transitions);
  }
}
