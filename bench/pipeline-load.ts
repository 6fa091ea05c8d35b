import type { Transition } from '../gen/dsat/task/v1/task';
import { TaskState } from '../gen/dsat/task/v1/task';
import type { MeshClients } from '../cli/mesh-clients';
import { isTerminalState } from '../services/status/task-state-machine';
import { nowMs, percentile, round } from './pipeline3/loops';

/*
 * `dsat bench --pipeline`: synthetic load on any applied pipeline of a running mesh, with the
 * workers it already has. Tasks go in through the router with at most `window` in flight; the
 * status feed of the pipeline tells when each ends and how long it spent at each stage (queued,
 * then running, from the times the status service recorded), so a slow stage shows by name.
 */

export interface PipelineLoadOptions {
  readonly pipeline: string;
  readonly tasks: number;
  readonly window: number;
  readonly payload: Buffer;
  readonly contentType: string;
  /** Give up on the tasks still running after this long with none ending. */
  readonly stallMs: number;
  readonly onProgress?: (ended: number, total: number) => void;
}

export interface Spread {
  readonly p50: number | null;
  readonly p90: number | null;
  readonly p99: number | null;
  readonly max: number | null;
}

export interface StageFigures {
  readonly stage: string;
  /** Tasks that reached the stage. */
  readonly tasks: number;
  /** Attempts run at the stage: more than `tasks` when some were retried. */
  readonly attempts: number;
  /** From entering the stage to its first attempt running. */
  readonly queue_ms: Spread;
  /** From the first attempt running to the stage done (retries included). */
  readonly run_ms: Spread;
}

export interface PipelineLoadResult {
  readonly type: 'summary';
  readonly system: 'dsat';
  readonly measurement: 'pipeline';
  readonly pipeline: string;
  readonly tasks: number;
  readonly window: number;
  readonly succeeded: number;
  readonly failed: number;
  /** Tasks submitted or not that did not end before the bench gave up waiting. */
  readonly lost: number;
  /** Whether it stopped waiting: no task ended for the stall time. */
  readonly gave_up: boolean;
  readonly duration_s: number;
  readonly tasks_per_s: number | null;
  /** From the submit call to the terminal transition reaching this client. */
  readonly end_to_end_ms: Spread;
  readonly stages: StageFigures[];
  /** Up to five tasks that did not succeed, with their final state and error. */
  readonly failures: string[];
}

function spread(values: number[]): Spread {
  const sorted = values.sort((a, b) => a - b);
  return {
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1]),
  };
}

interface StageSamples {
  tasks: number;
  attempts: number;
  queue: number[];
  run: number[];
}

/**
 * Adds one task's time at each stage, from its transitions in revision order. A stage ends when
 * the task moves to another stage or ends. A fan-out branch is a task of its own, added on its own.
 */
export function addStageTimes(
  transitions: readonly Transition[],
  stages: Map<string, StageSamples>,
): void {
  let open = { stage: '', enteredAt: 0, startedAt: undefined as number | undefined, attempts: 0 };
  const close = (at: number) => {
    if (open.stage === '') return;
    let s = stages.get(open.stage);
    if (!s) stages.set(open.stage, (s = { tasks: 0, attempts: 0, queue: [], run: [] }));
    const started = open.startedAt ?? at;
    s.tasks++;
    s.attempts += open.attempts;
    s.queue.push(started - open.enteredAt);
    s.run.push(at - started);
  };
  for (const t of transitions) {
    const at = t.at?.getTime() ?? 0;
    if (isTerminalState(t.toState)) return close(at);
    if (open.stage !== t.stage) {
      close(at);
      open = { stage: t.stage, enteredAt: at, startedAt: undefined, attempts: 0 };
    }
    if (t.toState === TaskState.TASK_STATE_RUNNING) {
      open.attempts++;
      open.startedAt ??= at;
    }
  }
}

/**
 * The tasks the bench submitted, each with the branches its fan-outs started (and theirs): a
 * submitted task has ended when every task of its tree has. The feed is in revision order, and a
 * branch starts in the commit of its parent's move, so it is seen before the parent can end.
 */
class TaskTrees {
  private readonly byTask = new Map<string, Transition[]>();
  private readonly rootOf = new Map<string, string>();
  /** Per root: the task ids of its tree, the root first. */
  private readonly members = new Map<string, string[]>();
  private readonly live = new Map<string, number>();
  /** Per root: when its tree ended, and the terminal transition that tells how (the worst). */
  readonly ended = new Map<string, { at: number; t: Transition }>();
  private readonly worst = new Map<string, Transition>();

  /** Adds a transition; returns the root whose tree it ended, if it did. */
  add(t: Transition, at: number): string | undefined {
    let list = this.byTask.get(t.taskId);
    if (!list) {
      this.byTask.set(t.taskId, (list = []));
      const root = this.rootOf.get(t.parentTaskId) ?? (t.parentTaskId || t.taskId);
      this.rootOf.set(t.taskId, root);
      this.live.set(root, (this.live.get(root) ?? 0) + 1);
      const members = this.members.get(root);
      if (members) members.push(t.taskId);
      else this.members.set(root, [t.taskId]);
    }
    list.push(t);
    if (!isTerminalState(t.toState)) return undefined;
    const root = this.rootOf.get(t.taskId) as string;
    const before = this.worst.get(root);
    if (before === undefined || before.toState === TaskState.TASK_STATE_SUCCEEDED) {
      this.worst.set(root, t);
    }
    const left = (this.live.get(root) ?? 1) - 1;
    this.live.set(root, left);
    if (left > 0 || this.ended.has(root)) return undefined;
    this.ended.set(root, { at, t: this.worst.get(root) as Transition });
    return root;
  }

  /** Every transition list of a root's tree. */
  tree(root: string): Transition[][] {
    return (this.members.get(root) ?? []).map((taskId) => this.byTask.get(taskId) ?? []);
  }
}

export async function runPipelineLoad(
  clients: MeshClients,
  opts: PipelineLoadOptions,
): Promise<PipelineLoadResult> {
  const abort = new AbortController();
  const { revision } = await clients.status.getStoreStats({});
  // Transitions of every task of the pipeline, ours picked out at the end: a transition may come
  // before the submit call that made it returns.
  const trees = new TaskTrees();
  const ended = trees.ended;
  const waiting = new Map<string, () => void>();
  let lastEndAt = nowMs();
  let feedError: unknown;
  const feed = (async () => {
    const stream = clients.status.watchEvents(
      {
        filter: { pipeline: opts.pipeline, stage: '', states: [], actionKey: '' },
        fromRevision: revision,
        skipTransitionIdPrefix: '',
      },
      { signal: abort.signal },
    );
    for await (const batch of stream) {
      for (const t of batch.transitions) {
        const at = nowMs();
        if (isTerminalState(t.toState)) lastEndAt = at;
        const root = trees.add(t, at);
        if (root !== undefined) waiting.get(root)?.();
      }
    }
  })().catch((err: unknown) => {
    if (!abort.signal.aborted) feedError = err;
  });

  const sentAt = new Map<string, number>();
  let next = 0;
  let done = 0;
  const startedAt = nowMs();
  const untilEnded = (taskId: string) =>
    ended.has(taskId)
      ? Promise.resolve()
      : new Promise<void>((resolve) => waiting.set(taskId, resolve));

  async function lane(): Promise<void> {
    while (next < opts.tasks && !abort.signal.aborted) {
      next++;
      const at = nowMs();
      const res = await clients.router.submitTask({
        pipeline: opts.pipeline,
        payload: opts.payload,
        contentType: opts.contentType,
      });
      sentAt.set(res.taskId, at);
      await untilEnded(res.taskId);
      waiting.delete(res.taskId);
      opts.onProgress?.(++done, opts.tasks);
    }
  }

  let stalled = false;
  const watchdog = setInterval(() => {
    if (feedError !== undefined || nowMs() - lastEndAt > opts.stallMs) {
      stalled = true;
      for (const w of waiting.values()) w();
      abort.abort();
    }
  }, 200);
  try {
    await Promise.all(Array.from({ length: Math.min(opts.window, opts.tasks) }, lane));
  } finally {
    clearInterval(watchdog);
    abort.abort();
    await feed;
  }
  if (feedError !== undefined) throw feedError;
  const durationS = (nowMs() - startedAt) / 1000;

  const latencies: number[] = [];
  const stages = new Map<string, StageSamples>();
  const failures: string[] = [];
  let succeeded = 0;
  let failed = 0;
  for (const [taskId, sent] of sentAt) {
    const end = ended.get(taskId);
    if (!end) continue;
    latencies.push(end.at - sent);
    for (const log of trees.tree(taskId)) addStageTimes(log, stages);
    if (end.t.toState === TaskState.TASK_STATE_SUCCEEDED) succeeded++;
    else {
      failed++;
      if (failures.length < 5) {
        const why = end.t.error ? `: ${end.t.error.code} ${end.t.error.message}` : '';
        failures.push(`${taskId} ${TaskState[end.t.toState].slice(11)}${why}`);
      }
    }
  }
  return {
    type: 'summary',
    system: 'dsat',
    measurement: 'pipeline',
    pipeline: opts.pipeline,
    tasks: opts.tasks,
    window: opts.window,
    succeeded,
    failed,
    lost: opts.tasks - succeeded - failed,
    gave_up: stalled,
    duration_s: round(durationS) ?? 0,
    tasks_per_s: round((succeeded + failed) / durationS, 1),
    end_to_end_ms: spread(latencies),
    stages: [...stages].map(([stage, s]) => ({
      stage,
      tasks: s.tasks,
      attempts: s.attempts,
      queue_ms: spread(s.queue),
      run_ms: spread(s.run),
    })),
    failures,
  };
}
