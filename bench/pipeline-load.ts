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
 * its branch moves to another stage, when new branches appear after it ran (its fan-out), or when
 * the task ends; each branch is followed on its own.
 */
export function addStageTimes(
  transitions: readonly Transition[],
  stages: Map<string, StageSamples>,
): void {
  interface Open {
    stage: string;
    enteredAt: number;
    startedAt: number | undefined;
    attempts: number;
  }
  const open = new Map<string, Open>();
  const close = (o: Open, at: number) => {
    let s = stages.get(o.stage);
    if (!s) stages.set(o.stage, (s = { tasks: 0, attempts: 0, queue: [], run: [] }));
    const started = o.startedAt ?? at;
    s.tasks++;
    s.attempts += o.attempts;
    s.queue.push(started - o.enteredAt);
    s.run.push(at - started);
  };
  for (const t of transitions) {
    const at = t.at?.getTime() ?? 0;
    if (isTerminalState(t.toState)) {
      for (const o of open.values()) close(o, at);
      return;
    }
    let o = open.get(t.branchId);
    if (o === undefined) {
      // A branch first seen: a fan-out, which ends the stages that ran and made it.
      for (const [branch, other] of open) {
        if (other.startedAt === undefined) continue;
        close(other, at);
        open.delete(branch);
      }
    }
    if (o === undefined || o.stage !== t.stage) {
      if (o !== undefined) close(o, at);
      o = { stage: t.stage, enteredAt: at, startedAt: undefined, attempts: 0 };
      open.set(t.branchId, o);
    }
    if (t.toState === TaskState.TASK_STATE_RUNNING) {
      o.attempts++;
      o.startedAt ??= at;
    }
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
  const byTask = new Map<string, Transition[]>();
  const ended = new Map<string, { at: number; t: Transition }>();
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
        let list = byTask.get(t.taskId);
        if (!list) byTask.set(t.taskId, (list = []));
        list.push(t);
        if (isTerminalState(t.toState) && !ended.has(t.taskId)) {
          lastEndAt = nowMs();
          ended.set(t.taskId, { at: lastEndAt, t });
          waiting.get(t.taskId)?.();
        }
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
    addStageTimes(byTask.get(taskId) ?? [], stages);
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
