import crypto from 'node:crypto';
import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import { StatusServiceDefinition, TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Transition } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { DsatClient } from '../../services/shared/grpc-client';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import type { RunningProcess } from './processes';
import { spawnDsat } from './processes';

export type StatusClient = DsatClient<typeof StatusServiceDefinition>;
export type TrackerClient = DsatClient<typeof TrackerServiceDefinition>;

export function statusClient(address: string): StatusClient {
  return createDsatClient(StatusServiceDefinition, createDsatChannel(address));
}

export function trackerClient(address: string): TrackerClient {
  return createDsatClient(TrackerServiceDefinition, createDsatChannel(address));
}

/** `dsat status` as its own process on a free port. */
export async function spawnStatus(
  dataDir: string,
): Promise<{ p: RunningProcess; address: string }> {
  const p = spawnDsat(['status', '--port', '0', '--data-dir', dataDir]);
  const m = await p.waitForLine(/^status listening on (\S+)$/);
  return { p, address: m[1]! };
}

/** `dsat tracker` as its own process on a free port; `listenedAt` is the monotonic time it said so. */
export async function spawnTracker(
  statusAddress: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<{ p: RunningProcess; address: string; listenedAt: number }> {
  const p = spawnDsat(
    ['tracker', '--port', '0', '--status-address', statusAddress, '--log-level', 'info', ...extra],
    env,
  );
  const m = await p.waitForLine(/^tracker listening on (\S+)$/);
  return { p, address: m[1]!, listenedAt: performance.now() };
}

/** Polls a process's stderr (JSON log lines) until one matches; its monotonic arrival time. */
export async function waitForLog(
  p: RunningProcess,
  re: RegExp,
  timeoutMs = 20_000,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let seen = 0;
  for (;;) {
    for (; seen < p.stderr.length; seen++) if (re.test(p.stderr[seen]!)) return performance.now();
    if (performance.now() > deadline) {
      throw new Error(`no log line matching ${re} within ${timeoutMs} ms:\n${p.stderr.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

const S = TaskState;

/** Matches a transition of `taskId` into `to` (at `attempt`, when given), for FeedRecorder.waitFor. */
export const is =
  (taskId: string, to: TaskState, attempt?: number) =>
  (t: Transition): boolean =>
    t.taskId === taskId && t.toState === to && (attempt === undefined || t.attempt === attempt);

/** The test in the router's seat: the writes a router makes, through the status service. */
/** A history as `STATE#attempt` steps, to compare whole logs at a glance. */
export const steps = (history: readonly Transition[]): string[] =>
  history.map((t) => `${S[t.toState]}#${t.attempt}`);

/** The log of a task whose attempt 1 timed out and whose attempt 2, retried, succeeded. */
export const TIMED_OUT_THEN_RETRIED = [
  'TASK_STATE_SUBMITTED#1',
  'TASK_STATE_QUEUED#1',
  'TASK_STATE_DISPATCHED#1',
  'TASK_STATE_RUNNING#1',
  'TASK_STATE_TIMED_OUT#1',
  'TASK_STATE_RETRY_WAIT#1',
  'TASK_STATE_QUEUED#2',
  'TASK_STATE_DISPATCHED#2',
  'TASK_STATE_RUNNING#2',
  'TASK_STATE_SUCCEEDED#2',
];

export class TestRouter {
  private n = 0;
  constructor(private readonly status: StatusClient) {}

  private base(taskId: string): TransitionWrite {
    return TransitionWrite.fromPartial({
      transitionId: `router-test-${taskId}-${++this.n}`,
      taskId,
    });
  }

  async commit(writes: TransitionWrite[]): Promise<void> {
    const { outcomes } = await this.status.commitTransitions({ writes });
    const bad = outcomes.find((o) => o.code !== 0);
    if (bad) throw new Error(`router write refused: ${bad.reason} ${bad.message}`);
  }

  /** Submits a task to `pipeline` at its entry `stage`; returns its id. */
  async submit(pipeline: Pipeline, stage = pipeline.stages[0]!.name): Promise<string> {
    const taskId = crypto.randomUUID();
    await this.commit([
      {
        ...this.base(taskId),
        toState: S.TASK_STATE_QUEUED,
        stage,
        attempt: 1,
        reason: 'SUBMITTED',
        payload: { data: Buffer.from('{}'), contentType: 'application/json' },
        create: {
          pipeline: pipeline.name,
          pipelineVersion: pipeline.version,
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      },
    ]);
    return taskId;
  }

  /** QUEUED → DISPATCHED → RUNNING at `attempt`, in one commit, as a router's Assign does. */
  async start(taskId: string, attempt: number): Promise<void> {
    const step = (from: TaskState, to: TaskState, reason: string): TransitionWrite => ({
      ...this.base(taskId),
      expectedState: from,
      expectedAttempt: attempt,
      toState: to,
      attempt,
      workerId: 'test-worker',
      reason,
    });
    await this.commit([
      step(S.TASK_STATE_QUEUED, S.TASK_STATE_DISPATCHED, 'DISPATCHED'),
      step(S.TASK_STATE_DISPATCHED, S.TASK_STATE_RUNNING, 'STARTED'),
    ]);
  }

  /** RUNNING → SUCCEEDED at a last stage. */
  async succeed(taskId: string, attempt: number): Promise<void> {
    await this.commit([
      {
        ...this.base(taskId),
        expectedState: S.TASK_STATE_RUNNING,
        expectedAttempt: attempt,
        toState: S.TASK_STATE_SUCCEEDED,
        attempt,
        reason: 'STAGE_DONE',
        payload: { data: Buffer.from('"done"'), contentType: 'application/json' },
      },
    ]);
  }
}

export interface SeenTransition {
  readonly t: Transition;
  /** performance.now() when the test received it. */
  readonly seenAt: number;
}

/**
 * Follows the status feed from `fromRevision`, stamping each transition with its arrival on this
 * process's monotonic clock, and lets a test wait for the one it expects (with a deadline).
 */
export class FeedRecorder {
  readonly seen: SeenTransition[] = [];
  private readonly abort = new AbortController();
  private waiters: (() => void)[] = [];
  readonly done: Promise<void>;

  constructor(status: StatusClient, fromRevision = 0) {
    this.done = (async () => {
      for await (const res of status.watchEvents({ fromRevision }, { signal: this.abort.signal })) {
        const now = performance.now();
        for (const t of res.transitions) this.seen.push({ t, seenAt: now });
        for (const w of this.waiters.splice(0)) w();
      }
    })().catch(() => undefined);
  }

  of(taskId: string): SeenTransition[] {
    return this.seen.filter((s) => s.t.taskId === taskId);
  }

  async waitFor(
    what: string,
    match: (t: Transition) => boolean,
    timeoutMs: number,
  ): Promise<SeenTransition> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.seen.find((s) => match(s.t));
      if (found) return found;
      const left = deadline - performance.now();
      if (left <= 0) {
        const log = this.seen.map((s) => `${S[s.t.toState]}#${s.t.attempt} ${s.t.reason}`);
        throw new Error(`no ${what} within ${timeoutMs} ms; the feed had:\n${log.join('\n')}`);
      }
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  stop(): Promise<void> {
    this.abort.abort();
    return this.done;
  }
}
