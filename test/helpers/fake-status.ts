import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type {
  StatusServiceImplementation,
  TransitionOutcome,
  TransitionWrite,
  WatchEventsResponse,
} from '../../gen/dsat/status/v1/status';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { Task, TaskFilter, Transition } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { AsyncQueue } from '../../services/shared/async-queue';
import { loadConfig, statusConfigSpec } from '../../services/shared/config';
import { notFound } from '../../services/shared/errors';
import type { GrpcServer } from '../../services/shared/grpc-server';
import { serviceEntry, startGrpcServer } from '../../services/shared/grpc-server';
import { createLogger } from '../../services/shared/logger';
import type { TerminatorContext } from '../../services/shared/terminator';
import { withUnimplemented } from '../../services/shared/unimplemented';

/**
 * An in-memory StatusService that follows the proto contract and the state machine of
 * docs/task-lifecycle.md, for router tests that must not depend on the LevelDB store. It commits
 * each ApplyTransitions message as one batch, keeps every transition as the feed, and counts
 * refusals like the real store. Fan-out and branches are refused, as the store does for now.
 */
const S = TaskState;
type Move = 'create' | 'stay' | 'advance' | 'retry' | 'redrive' | 'finish';
const TABLE: [TaskState, TaskState, Move[]][] = [
  [S.TASK_STATE_QUEUED, S.TASK_STATE_DISPATCHED, ['stay']],
  [S.TASK_STATE_QUEUED, S.TASK_STATE_QUEUED, ['advance']],
  [S.TASK_STATE_QUEUED, S.TASK_STATE_SUCCEEDED, ['finish']],
  [S.TASK_STATE_QUEUED, S.TASK_STATE_FAILED, ['stay']],
  [S.TASK_STATE_QUEUED, S.TASK_STATE_TIMED_OUT, ['stay']],
  [S.TASK_STATE_QUEUED, S.TASK_STATE_CANCELLED, ['stay']],
  [S.TASK_STATE_DISPATCHED, S.TASK_STATE_RUNNING, ['stay']],
  [S.TASK_STATE_DISPATCHED, S.TASK_STATE_QUEUED, ['retry']],
  [S.TASK_STATE_DISPATCHED, S.TASK_STATE_TIMED_OUT, ['stay']],
  [S.TASK_STATE_DISPATCHED, S.TASK_STATE_CANCELLED, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_RUNNING, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_QUEUED, ['advance', 'retry']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_SUCCEEDED, ['finish']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_RETRY_WAIT, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_FAILED, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_DEAD_LETTERED, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_WAITING, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_TIMED_OUT, ['stay']],
  [S.TASK_STATE_RUNNING, S.TASK_STATE_CANCELLED, ['stay']],
  [S.TASK_STATE_RETRY_WAIT, S.TASK_STATE_QUEUED, ['retry']],
  [S.TASK_STATE_RETRY_WAIT, S.TASK_STATE_CANCELLED, ['stay']],
  [S.TASK_STATE_WAITING, S.TASK_STATE_QUEUED, ['advance']],
  [S.TASK_STATE_WAITING, S.TASK_STATE_SUCCEEDED, ['finish']],
  [S.TASK_STATE_WAITING, S.TASK_STATE_FAILED, ['stay']],
  [S.TASK_STATE_WAITING, S.TASK_STATE_TIMED_OUT, ['stay']],
  [S.TASK_STATE_WAITING, S.TASK_STATE_CANCELLED, ['stay']],
  [S.TASK_STATE_TIMED_OUT, S.TASK_STATE_RETRY_WAIT, ['stay']],
  [S.TASK_STATE_TIMED_OUT, S.TASK_STATE_QUEUED, ['retry']],
  [S.TASK_STATE_TIMED_OUT, S.TASK_STATE_DEAD_LETTERED, ['stay']],
  [S.TASK_STATE_TIMED_OUT, S.TASK_STATE_FAILED, ['stay']],
  [S.TASK_STATE_TIMED_OUT, S.TASK_STATE_CANCELLED, ['stay']],
  [S.TASK_STATE_DEAD_LETTERED, S.TASK_STATE_QUEUED, ['redrive']],
];
const RULES = new Map(TABLE.map(([f, t, m]) => [`${f}>${t}`, m]));
const TERMINAL = new Set([
  S.TASK_STATE_SUCCEEDED,
  S.TASK_STATE_FAILED,
  S.TASK_STATE_DEAD_LETTERED,
  S.TASK_STATE_CANCELLED,
]);

class Refusal extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

interface Stored {
  task: Task;
  ids: Set<string>;
  history: Transition[];
}

export interface FakeStatusOptions {
  /** Delay before each ApplyTransitions message is committed (fault injection). */
  commitDelayMs?: number;
}

export class FakeStatus {
  readonly tasks = new Map<string, Stored>();
  readonly pipelines = new Map<string, Pipeline[]>();
  readonly feed: Transition[] = [];
  readonly idempotency = new Map<string, string>();
  revision = 0;
  stats = { staleRefused: 0, illegalRefused: 0, duplicates: 0, commits: 0, transitions: 0 };
  commitDelayMs = 0;
  /** Refuse every write with UNAVAILABLE-like silence: the stream is cut when true. */
  private watchers = new Set<{
    filter: TaskFilter | undefined;
    queue: AsyncQueue<WatchEventsResponse>;
  }>();

  constructor(options: FakeStatusOptions = {}) {
    this.commitDelayMs = options.commitDelayMs ?? 0;
  }

  savePipeline(p: Pipeline): Pipeline {
    const versions = this.pipelines.get(p.name) ?? [];
    const stored = { ...p, version: versions.length + 1, createdAt: new Date() };
    versions.push(stored);
    this.pipelines.set(p.name, versions);
    return stored;
  }

  get(taskId: string): Task | undefined {
    return this.tasks.get(taskId)?.task;
  }

  history(taskId: string): Transition[] {
    return this.tasks.get(taskId)?.history ?? [];
  }

  /** Applies one batch; every write gets an outcome, in order. */
  apply(writes: readonly TransitionWrite[]): TransitionOutcome[] {
    const out: TransitionOutcome[] = [];
    const batch: Transition[] = [];
    for (const w of writes) {
      try {
        out.push(this.applyOne(w, batch));
      } catch (err) {
        const r = err instanceof Refusal ? err : new Refusal(13, 'INTERNAL', String(err));
        if (r.reason === 'STALE_ATTEMPT') this.stats.staleRefused++;
        else if (r.code === 9) this.stats.illegalRefused++;
        const cur = this.tasks.get(w.taskId)?.task;
        out.push({
          transitionId: w.transitionId,
          taskId: w.taskId,
          code: r.code,
          reason: r.reason,
          message: r.message,
          revision: cur?.revision ?? 0,
          seq: cur?.seq ?? 0,
          duplicate: false,
        });
      }
    }
    this.stats.commits++;
    this.stats.transitions += batch.length;
    if (batch.length > 0) this.publish(batch);
    return out;
  }

  private entry(
    task: Task,
    w: TransitionWrite,
    from: TaskState,
    to: TaskState,
    stage: string,
    attempt: number,
    reason: string,
  ): Transition {
    return {
      revision: ++this.revision,
      taskId: task.taskId,
      seq: task.seq + 1,
      fromState: from,
      toState: to,
      stage,
      attempt,
      workerId: w.workerId,
      reason,
      at: new Date(),
      pipeline: task.pipeline,
      traceId: task.traceId,
      error: w.error,
      branchId: '',
      payload: undefined,
      transitionId: w.transitionId,
    };
  }

  private applyOne(w: TransitionWrite, batch: Transition[]): TransitionOutcome {
    if (w.fanOutStages.length > 0) {
      throw new Refusal(
        3,
        'UNSUPPORTED',
        'fan_out_stages: fan-out is not supported by this store yet',
      );
    }
    if (w.branchId !== '')
      throw new Refusal(3, 'UNSUPPORTED', 'branch_id: branches are not supported');
    const ok = (task: Task, duplicate: boolean): TransitionOutcome => ({
      transitionId: w.transitionId,
      taskId: task.taskId,
      code: 0,
      reason: '',
      message: '',
      revision: task.revision,
      seq: task.seq,
      duplicate,
    });
    if (w.create) {
      const existing = this.tasks.get(w.taskId);
      if (existing?.ids.has(w.transitionId)) {
        this.stats.duplicates++;
        return ok(existing.task, true);
      }
      if (existing) throw new Refusal(6, 'TASK_EXISTS', 'task exists');
      const key = w.create.idempotencyKey;
      if (key !== '' && this.idempotency.has(key)) {
        this.stats.duplicates++;
        return ok(this.tasks.get(this.idempotency.get(key)!)!.task, true);
      }
      const m = /^00-([0-9a-f]{32})-/.exec(w.create.traceparent);
      const now = new Date();
      let task: Task = {
        taskId: w.taskId,
        pipeline: w.create.pipeline,
        pipelineVersion: w.create.pipelineVersion,
        stage: w.stage,
        state: S.TASK_STATE_SUBMITTED,
        attempt: 1,
        seq: 0,
        revision: 0,
        input: w.payload,
        output: undefined,
        traceId: m?.[1] ?? '',
        traceparent: w.create.traceparent,
        lastError: undefined,
        createdAt: now,
        updatedAt: now,
        priority: w.create.priority,
        idempotencyKey: key,
        hops: 0,
        branches: [],
        progress: undefined,
        asyncToken: '',
        workerId: '',
      };
      const e1 = this.entry(
        task,
        w,
        S.TASK_STATE_UNSPECIFIED,
        S.TASK_STATE_SUBMITTED,
        w.stage,
        1,
        'SUBMITTED',
      );
      task = { ...task, seq: e1.seq, revision: e1.revision };
      const e2 = this.entry(
        task,
        w,
        S.TASK_STATE_SUBMITTED,
        S.TASK_STATE_QUEUED,
        w.stage,
        1,
        w.reason || 'QUEUED',
      );
      task = { ...task, state: S.TASK_STATE_QUEUED, seq: e2.seq, revision: e2.revision };
      this.tasks.set(w.taskId, { task, ids: new Set([w.transitionId]), history: [e1, e2] });
      if (key !== '') this.idempotency.set(key, w.taskId);
      batch.push(e1, e2);
      return ok(task, false);
    }
    const stored = this.tasks.get(w.taskId);
    if (!stored) throw new Refusal(5, 'TASK_NOT_FOUND', `task ${w.taskId} not found`);
    if (stored.ids.has(w.transitionId)) {
      this.stats.duplicates++;
      return ok(stored.task, true);
    }
    const task = stored.task;
    if (w.expectedAttempt !== 0 && w.expectedAttempt !== task.attempt) {
      throw new Refusal(
        9,
        'STALE_ATTEMPT',
        `task is at attempt ${task.attempt}, not ${w.expectedAttempt}`,
      );
    }
    if (w.expectedState !== task.state) {
      throw new Refusal(9, 'STATE_MISMATCH', `task is ${S[task.state]}, not ${S[w.expectedState]}`);
    }
    const moves = RULES.get(`${task.state}>${w.toState}`);
    if (!moves) throw new Refusal(9, 'ILLEGAL_TRANSITION', `${S[task.state]} → ${S[w.toState]}`);
    const sameStage = w.stage === '' || w.stage === task.stage;
    const move = moves.find((m) =>
      m === 'advance'
        ? !sameStage
        : m === 'retry' || m === 'redrive' || m === 'stay' || m === 'finish'
          ? sameStage
          : false,
    );
    if (!move) throw new Refusal(3, 'INVALID_FIELD', 'stage: wrong stage for this move');
    const attempt =
      move === 'advance' || move === 'redrive'
        ? 1
        : move === 'retry'
          ? task.attempt + 1
          : task.attempt;
    if (w.attempt !== 0 && w.attempt !== attempt)
      throw new Refusal(3, 'INVALID_FIELD', `attempt: ${w.attempt} ≠ ${attempt}`);
    if (move === 'retry' && w.reason === '')
      throw new Refusal(3, 'INVALID_FIELD', 'reason: required');
    if (w.toState === S.TASK_STATE_WAITING && w.asyncToken === '')
      throw new Refusal(3, 'INVALID_FIELD', 'async_token');
    const stage = sameStage ? task.stage : w.stage;
    const publishing =
      task.state === S.TASK_STATE_QUEUED && (move === 'advance' || move === 'finish');
    const e = this.entry(task, w, task.state, w.toState, stage, attempt, w.reason || 'MOVED');
    const finished = w.toState === S.TASK_STATE_SUCCEEDED;
    e.payload = finished
      ? (w.payload ?? (publishing ? task.input : undefined))
      : publishing
        ? task.input
        : undefined;
    const stageDone = stage !== task.stage;
    stored.task = {
      ...task,
      stage,
      state: w.toState,
      attempt,
      seq: e.seq,
      revision: e.revision,
      input: stageDone ? (w.payload ?? (publishing ? task.input : undefined)) : task.input,
      output: finished ? e.payload : task.output,
      lastError: w.error ?? (stageDone ? undefined : task.lastError),
      updatedAt: e.at,
      hops: stageDone || finished ? task.hops + 1 : task.hops,
      progress: w.progress ?? (stageDone ? undefined : task.progress),
      asyncToken: w.toState === S.TASK_STATE_WAITING ? w.asyncToken : '',
      workerId: w.workerId === '' ? task.workerId : w.workerId,
    };
    stored.ids.add(w.transitionId);
    stored.history.push(e);
    batch.push(e);
    return ok(stored.task, false);
  }

  private matches(f: TaskFilter | undefined, t: Transition): boolean {
    if (!f) return true;
    if (f.states.length > 0 && !f.states.includes(t.toState)) return false;
    if (f.pipeline !== '' && f.pipeline !== t.pipeline) return false;
    if (f.stage !== '' && f.stage !== t.stage) return false;
    return true;
  }

  private publish(batch: Transition[]) {
    this.feed.push(...batch);
    for (const w of this.watchers) {
      const transitions = batch.filter((t) => this.matches(w.filter, t));
      w.queue.push({ transitions, revision: this.revision });
    }
  }

  /** Cuts every open watch (a broken feed). */
  breakWatches(): void {
    for (const w of this.watchers) w.queue.fail(new Error('cut'));
    this.watchers.clear();
  }

  implementation(): Partial<StatusServiceImplementation<TerminatorContext>> {
    const delayed = async () => {
      if (this.commitDelayMs > 0) await new Promise((r) => setTimeout(r, this.commitDelayMs));
    };
    return {
      getTask: async ({ taskId }) => {
        const t = this.get(taskId);
        if (!t) throw notFound('task', taskId, 'task_id');
        return { task: t };
      },
      getTaskHistory: async ({ taskId }) => ({
        transitions: this.history(taskId),
        nextPageToken: '',
      }),
      listUnfinishedTasks: async ({ stages }) => ({
        tasks: [...this.tasks.values()]
          .map((s) => s.task)
          .filter(
            (t) => !TERMINAL.has(t.state) && (stages.length === 0 || stages.includes(t.stage)),
          ),
        nextPageToken: '',
        revision: this.revision,
      }),
      commitTransitions: async ({ writes }) => {
        await delayed();
        return { outcomes: this.apply(writes) };
      },
      applyTransitions: async function* (
        this: FakeStatus,
        requests: AsyncIterable<{ writes: TransitionWrite[] }>,
      ) {
        for await (const req of requests) {
          await delayed();
          yield { outcomes: this.apply(req.writes) };
        }
      }.bind(this),
      watchEvents: async function* (
        this: FakeStatus,
        req: { filter?: TaskFilter; fromRevision: number },
        ctx: { signal: AbortSignal },
      ) {
        const queue = new AsyncQueue<WatchEventsResponse>();
        const w = { filter: req.filter, queue };
        const from = req.fromRevision;
        if (from > 0) {
          const past = this.feed.filter((t) => t.revision > from && this.matches(req.filter, t));
          queue.push({ transitions: past, revision: this.revision });
        }
        this.watchers.add(w);
        const onAbort = () => queue.fail(new Error('aborted'));
        ctx.signal.addEventListener('abort', onAbort);
        try {
          yield* queue;
        } finally {
          ctx.signal.removeEventListener('abort', onAbort);
          this.watchers.delete(w);
        }
      }.bind(this),
      watchTask: async function* (
        this: FakeStatus,
        req: { taskId: string; fromRevision: number },
        ctx: { signal: AbortSignal },
      ) {
        const t = this.get(req.taskId);
        if (!t) throw notFound('task', req.taskId, 'task_id');
        const queue = new AsyncQueue<WatchEventsResponse>();
        const w = { filter: undefined, queue };
        this.watchers.add(w);
        const onAbort = () => queue.fail(new Error('aborted'));
        ctx.signal.addEventListener('abort', onAbort);
        try {
          let last = req.fromRevision;
          if (last === 0) {
            yield { event: { $case: 'snapshot' as const, value: t } };
            last = t.revision;
            if (TERMINAL.has(t.state)) return;
          } else {
            for (const e of this.history(req.taskId)) {
              if (e.revision <= last) continue;
              last = e.revision;
              yield { event: { $case: 'transition' as const, value: e } };
              if (TERMINAL.has(e.toState)) return;
            }
          }
          for await (const batch of queue) {
            for (const e of batch.transitions) {
              if (e.taskId !== req.taskId || e.revision <= last) continue;
              last = e.revision;
              yield { event: { $case: 'transition' as const, value: e } };
              if (TERMINAL.has(e.toState)) return;
            }
          }
        } finally {
          ctx.signal.removeEventListener('abort', onAbort);
          this.watchers.delete(w);
        }
      }.bind(this),
      getPipeline: async ({ name, version }) => {
        const versions = this.pipelines.get(name);
        const p =
          version === 0
            ? versions?.[versions.length - 1]
            : versions?.find((v) => v.version === version);
        if (!p) throw notFound('pipeline', name, 'name');
        return { pipeline: p };
      },
      savePipeline: async ({ pipeline }) => ({
        pipeline: this.savePipeline(pipeline!),
        changed: true,
      }),
      getStoreStats: async () => ({
        revision: this.revision,
        unfinishedTasks: [...this.tasks.values()].filter((s) => !TERMINAL.has(s.task.state)).length,
        commits: this.stats.commits,
        transitions: this.stats.transitions,
        puts: 0,
        staleRefused: this.stats.staleRefused,
        illegalRefused: this.stats.illegalRefused,
        duplicates: this.stats.duplicates,
        tasksCreated: this.tasks.size,
      }),
    };
  }
}

/** Serves a FakeStatus on 127.0.0.1:0. */
export async function startFakeStatus(
  fake = new FakeStatus(),
): Promise<{ fake: FakeStatus; server: GrpcServer }> {
  const server = await startGrpcServer({
    name: 'fake-status',
    config: loadConfig(statusConfigSpec, { port: '0', shutdownGrace: '500' }, {}),
    logger: createLogger('fake-status', 'silent'),
    services: [
      serviceEntry(
        StatusServiceDefinition,
        withUnimplemented(StatusServiceDefinition, fake.implementation()),
      ),
    ],
  });
  return { fake, server };
}
