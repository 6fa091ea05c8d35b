import type { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import type { Task } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { systemClock } from '../../../services/tracker/monotonic-clock';
import { createPipelineCatalog } from '../../../services/tracker/pipeline-catalog';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';
import type { TaskTimers } from '../../../services/tracker/timers';
import { createTaskTimers } from '../../../services/tracker/timers';
import { createBatchingSink } from '../../../services/tracker/transition-sink';
import { FakeStatusStore } from '../../helpers/fake-status-store';

const S = TaskState;

const PIPELINE = `
name: jobs
stages:
  - name: fetch
    next: [work]
    queue_timeout: 5s
  - name: work
    next: [wait]
    run_timeout: 30s
    max_attempts: 2
    backoff: { initial: 1s, max: 10s, multiplier: 3, jitter: 0.2 }
  - name: wait
    decorators: [ASYNC]
    async_timeout: 10s
    max_attempts: 3
`;

interface Harness {
  store: FakeStatusStore;
  timers: TaskTimers;
  pipelines: Map<string, Pipeline>;
  /** Resolves once every feed transition so far was folded into the timers. */
  settled(): Promise<void>;
}

/**
 * The timers with a fake store whose feed flows straight back into them, as the feed follower
 * does; the backoff jitter is drawn as 0.5, i.e. none.
 */
function harness(yaml = PIPELINE, random = () => 0.5): Harness {
  const pipelines = new Map<string, Pipeline>();
  const p1 = { ...parsePipelineText(yaml), version: 1 };
  pipelines.set(`${p1.name}@1`, p1);
  pipelines.set(`${p1.name}@0`, p1);
  const store = new FakeStatusStore();
  const catalog = createPipelineCatalog({
    store: { get: async (name, version) => pipelines.get(`${name}@${version}`) },
    clock: systemClock,
  });
  const sink = createBatchingSink((writes) => store.commit(writes));
  const timers = createTaskTimers({ clock: systemClock, sink, catalog, random });
  let chain = Promise.resolve();
  store.subscribe((transitions) => {
    chain = chain.then(async () => {
      await timers.prepare(transitions);
      timers.apply(transitions);
    });
  });
  return { store, timers, pipelines, settled: () => chain };
}

const states = (store: FakeStatusStore, id: string) =>
  store.history(id).map((t) => `${S[t.toState].replace('TASK_STATE_', '')}#${t.attempt}`);

/** The router's part: take a queued task to RUNNING. */
function start(store: FakeStatusStore, id: string) {
  store.move(id, S.TASK_STATE_DISPATCHED);
  store.move(id, S.TASK_STATE_RUNNING);
}

describe('tracker timers', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('fires a queue timeout 5 s after the tracker saw QUEUED, and not a millisecond before', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'fetch');
    await h.settled();
    await jest.advanceTimersByTimeAsync(4_999);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_QUEUED);
    await jest.advanceTimersByTimeAsync(1);
    const log = h.store.history('t1');
    expect(states(h.store, 't1')).toEqual([
      'SUBMITTED#1',
      'QUEUED#1',
      'TIMED_OUT#1',
      'RETRY_WAIT#1',
    ]);
    expect(log[2]).toMatchObject({ reason: 'QUEUE_TIMEOUT', error: { code: 'QUEUE_TIMEOUT' } });
    expect(log[3]?.reason).toBe('QUEUE_TIMEOUT');
    // The timeout and its follow-up were one store call.
    const ids = h.store.writes.map((w) => w.transitionId);
    expect(ids).toEqual([
      expect.stringMatching(/^tracker-queue-t1-/),
      expect.stringMatching(/-then$/),
    ]);
    expect(h.timers.stats).toMatchObject({ fired: 1, applied: 2, lostRace: 0 });
  });

  it('fires a run timeout counted from DISPATCHED, RUNNING does not restart it', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    await h.settled();
    h.store.move('t1', S.TASK_STATE_DISPATCHED);
    await h.settled();
    await jest.advanceTimersByTimeAsync(10_000);
    h.store.move('t1', S.TASK_STATE_RUNNING);
    await h.settled();
    await jest.advanceTimersByTimeAsync(19_999);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RUNNING);
    await jest.advanceTimersByTimeAsync(1);
    expect(states(h.store, 't1').slice(-2)).toEqual(['TIMED_OUT#1', 'RETRY_WAIT#1']);
    const timedOut = h.store.history('t1').find((t) => t.toState === S.TASK_STATE_TIMED_OUT);
    expect(timedOut).toMatchObject({ fromState: S.TASK_STATE_RUNNING, reason: 'RUN_TIMEOUT' });
    expect(timedOut?.error?.message).toContain('run_timeout of 30s');
  });

  it('fires an async timeout for a WAITING task', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'wait');
    start(h.store, 't1');
    h.store.move('t1', S.TASK_STATE_WAITING);
    await h.settled();
    await jest.advanceTimersByTimeAsync(9_999);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_WAITING);
    await jest.advanceTimersByTimeAsync(1);
    const log = h.store.history('t1');
    expect(log.at(-2)).toMatchObject({ fromState: S.TASK_STATE_WAITING, reason: 'ASYNC_TIMEOUT' });
    expect(log.at(-1)?.toState).toBe(S.TASK_STATE_RETRY_WAIT);
  });

  it('retries after the backoff with attempt + 1, reason RETRY, then dead-letters when attempts are spent', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    await h.settled();
    await jest.advanceTimersByTimeAsync(30_000);
    await h.settled();
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RETRY_WAIT);
    // Backoff after attempt 1: initial 1 s (jitter drawn as none).
    await jest.advanceTimersByTimeAsync(999);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RETRY_WAIT);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.history('t1').at(-1)).toMatchObject({
      toState: S.TASK_STATE_QUEUED,
      attempt: 2,
      reason: 'RETRY',
    });
    await h.settled();
    start(h.store, 't1');
    await h.settled();
    await jest.advanceTimersByTimeAsync(30_000);
    await h.settled();
    expect(states(h.store, 't1')).toEqual([
      'SUBMITTED#1',
      'QUEUED#1',
      'DISPATCHED#1',
      'RUNNING#1',
      'TIMED_OUT#1',
      'RETRY_WAIT#1',
      'QUEUED#2',
      'DISPATCHED#2',
      'RUNNING#2',
      'TIMED_OUT#2',
      'DEAD_LETTERED#2',
    ]);
    const task = h.store.tasks.get('t1');
    expect(task?.lastError).toMatchObject({ code: 'RUN_TIMEOUT', retryable: true });
    expect(h.store.history('t1').at(-1)?.reason).toBe('ATTEMPTS_EXHAUSTED');
    // Nothing is armed for a dead-lettered task, and nothing more is written.
    expect(h.timers.size).toBe(0);
    const written = h.store.writes.length;
    await jest.advanceTimersByTimeAsync(600_000);
    expect(h.store.writes.length).toBe(written);
  });

  it('arms the backoff for a RETRY_WAIT the router wrote after a retryable failure', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    h.store.move('t1', S.TASK_STATE_RETRY_WAIT, {
      error: { code: 'HANDLER_ERROR', message: 'boom', retryable: true, details: {} },
    });
    await h.settled();
    await jest.advanceTimersByTimeAsync(999);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RETRY_WAIT);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.tasks.get('t1')).toMatchObject({ state: S.TASK_STATE_QUEUED, attempt: 2 });
  });

  it('leaves a task the router FAILED (non-retryable) as it is', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    await h.settled();
    expect(h.timers.armed('t1')?.kind).toBe('run');
    h.store.move('t1', S.TASK_STATE_FAILED, {
      reason: 'NON_RETRYABLE_ERROR',
      error: { code: 'BAD_INPUT', message: 'no', retryable: false, details: {} },
    });
    await h.settled();
    expect(h.timers.size).toBe(0);
    const written = h.store.writes.length;
    await jest.advanceTimersByTimeAsync(120_000);
    expect(h.store.writes.length).toBe(written);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_FAILED);
  });

  it('FAILS at once when the stage lists the timeout as non-retryable', async () => {
    const h = harness(`
name: jobs
stages:
  - name: work
    run_timeout: 2s
    non_retryable_errors: [RUN_TIMEOUT]
`);
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    await h.settled();
    await jest.advanceTimersByTimeAsync(2_000);
    expect(states(h.store, 't1').slice(-2)).toEqual(['TIMED_OUT#1', 'FAILED#1']);
    expect(h.store.history('t1').at(-1)?.reason).toBe('NON_RETRYABLE_ERROR');
    expect(h.store.tasks.get('t1')?.lastError?.retryable).toBe(false);
  });

  it('disarms when it sees the result first: nothing is written', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    await h.settled();
    await jest.advanceTimersByTimeAsync(29_999);
    h.store.move('t1', S.TASK_STATE_SUCCEEDED, { reason: 'STAGE_DONE' });
    await h.settled();
    await jest.advanceTimersByTimeAsync(60_000);
    expect(h.timers.stats.fired).toBe(0);
    expect(states(h.store, 't1').at(-1)).toBe('SUCCEEDED#1');
  });

  it('loses the race to a result it has not seen yet and writes nothing harmful', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    await h.settled();
    await jest.advanceTimersByTimeAsync(29_999);
    // The result is committed, but the feed that would disarm the timer is slow.
    h.store.holdFeed();
    h.store.move('t1', S.TASK_STATE_SUCCEEDED, { reason: 'STAGE_DONE' });
    await jest.advanceTimersByTimeAsync(1);
    expect(h.timers.stats).toMatchObject({ fired: 1, lostRace: 1, applied: 0 });
    h.store.releaseFeed();
    await h.settled();
    expect(states(h.store, 't1')).toEqual([
      'SUBMITTED#1',
      'QUEUED#1',
      'DISPATCHED#1',
      'RUNNING#1',
      'SUCCEEDED#1',
    ]);
    expect(h.timers.size).toBe(0);
  });

  it('never hits the same state and attempt at a later stage with a stale timer', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'fetch');
    await h.settled();
    // fetch is done and the task is QUEUED#1 again, at work, before the feed says so.
    h.store.holdFeed();
    start(h.store, 't1');
    h.store.move('t1', S.TASK_STATE_QUEUED, { stage: 'work', reason: 'STAGE_DONE' });
    await jest.advanceTimersByTimeAsync(5_000);
    expect(h.timers.stats).toMatchObject({ fired: 1, applied: 0 });
    expect(h.store.tasks.get('t1')).toMatchObject({ state: S.TASK_STATE_QUEUED, stage: 'work' });
    h.store.releaseFeed();
    await h.settled();
    // work has no queue timeout: nothing is armed.
    expect(h.timers.size).toBe(0);
  });

  it('is not moved by wall-clock jumps of an hour either way (T18)', async () => {
    for (const jump of [3_600_000, -3_600_000]) {
      const h = harness();
      h.store.create('t1', 'jobs', 1, 'work');
      start(h.store, 't1');
      await h.settled();
      await jest.advanceTimersByTimeAsync(10_000);
      jest.setSystemTime(Date.now() + jump);
      await jest.advanceTimersByTimeAsync(19_999);
      expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RUNNING);
      await jest.advanceTimersByTimeAsync(1);
      expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RETRY_WAIT);
      // The backoff is on the monotonic clock too.
      await h.settled();
      jest.setSystemTime(Date.now() - jump);
      await jest.advanceTimersByTimeAsync(999);
      expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_RETRY_WAIT);
      await jest.advanceTimersByTimeAsync(1);
      expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_QUEUED);
    }
  });

  it('keeps the pipeline version a task pinned at submit when a new version is applied', async () => {
    const h = harness(`
name: jobs
stages:
  - name: work
    run_timeout: 1s
`);
    h.store.create('t1', 'jobs', 1, 'work');
    await h.settled();
    const v2 = {
      ...parsePipelineText('name: jobs\nstages: [{name: work, run_timeout: 60s}]'),
      version: 2,
    };
    h.pipelines.set('jobs@2', v2);
    h.pipelines.set('jobs@0', v2);
    start(h.store, 't1');
    await h.settled();
    expect(h.timers.armed('t1')).toMatchObject({ kind: 'run', version: 1, durationMs: 1_000 });
  });

  it('tries a write again when the store is unreachable, with the same transition ids', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'fetch');
    await h.settled();
    h.store.down = true;
    await jest.advanceTimersByTimeAsync(5_000);
    expect(h.timers.stats).toMatchObject({ fired: 1, retriedWrites: 1 });
    expect(h.timers.armed('t1')?.kind).toBe('queue');
    h.store.down = false;
    await jest.advanceTimersByTimeAsync(1_000);
    expect(states(h.store, 't1').slice(-2)).toEqual(['TIMED_OUT#1', 'RETRY_WAIT#1']);
    expect(h.store.history('t1')[2]?.transitionId).toMatch(/^tracker-queue-t1-/);
  });

  it('settles a TIMED_OUT its writer left without a follow-up', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'work');
    start(h.store, 't1');
    h.store.move('t1', S.TASK_STATE_TIMED_OUT, {
      reason: 'HEARTBEAT_TIMEOUT',
      error: { code: 'HEARTBEAT_TIMEOUT', message: 'silent', retryable: true, details: {} },
    });
    await h.settled();
    await jest.advanceTimersByTimeAsync(4_999);
    expect(h.store.tasks.get('t1')?.state).toBe(S.TASK_STATE_TIMED_OUT);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.history('t1').at(-1)).toMatchObject({
      toState: S.TASK_STATE_RETRY_WAIT,
      reason: 'HEARTBEAT_TIMEOUT',
    });
  });

  it('keeps ONE setTimeout for ten thousand armed tasks', async () => {
    const h = harness();
    for (let i = 0; i < 10_000; i++) h.store.create(`t${i}`, 'jobs', 1, 'fetch');
    await h.settled();
    expect(h.timers.size).toBe(10_000);
    expect(jest.getTimerCount()).toBe(1);
    await jest.advanceTimersByTimeAsync(5_000);
    await h.settled();
    expect(h.timers.stats.fired).toBe(10_000);
    expect(h.timers.stats.applied).toBe(20_000);
    // Every task now waits out its backoff: one timer still.
    expect(h.timers.size).toBe(10_000);
    expect(jest.getTimerCount()).toBe(1);
  });
});

describe('re-arming from stored records after a restart', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function record(state: TaskState, stage: string, ageMs: number, attempt = 1): Task {
    const h = harness();
    const base = h.store.create('x', 'jobs', 1, stage)[1]!;
    return {
      ...h.store.tasks.get('x')!,
      taskId: `r-${state}-${ageMs}`,
      state,
      attempt,
      revision: base.revision,
      updatedAt: new Date(Date.now() - ageMs),
    };
  }

  async function restored(tasks: Task[]) {
    const h = harness();
    for (const t of tasks) h.store.tasks.set(t.taskId, { ...t });
    await h.timers.prepareRestore(tasks);
    h.timers.restore(tasks, 10);
    return h;
  }

  it('subtracts the record age: a queue timeout of 5 s with 2 s gone fires 3 s after start-up', async () => {
    const t = record(S.TASK_STATE_QUEUED, 'fetch', 2_000);
    const h = await restored([t]);
    await jest.advanceTimersByTimeAsync(2_999);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_QUEUED);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_RETRY_WAIT);
  });

  it('takes the age on the store’s clock: a tracker clock an hour ahead fires nothing early', async () => {
    const t = record(S.TASK_STATE_QUEUED, 'fetch', 2_000);
    const storeNow = Date.now();
    jest.setSystemTime(storeNow + 3_600_000);
    const h = harness();
    h.store.tasks.set(t.taskId, { ...t });
    await h.timers.prepareRestore([t]);
    h.timers.restore([t], 10, storeNow);
    await jest.advanceTimersByTimeAsync(2_999);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_QUEUED);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_RETRY_WAIT);
  });

  it('fires at once a timeout that fell due during the outage', async () => {
    const t = record(S.TASK_STATE_RUNNING, 'work', 45_000);
    const h = await restored([t]);
    await jest.advanceTimersByTimeAsync(0);
    expect(h.store.history(t.taskId).map((x) => x.reason)).toEqual(['RUN_TIMEOUT', 'RUN_TIMEOUT']);
  });

  it('never fires earlier than the full timeout when the record looks younger than zero', async () => {
    const t = record(S.TASK_STATE_WAITING, 'wait', -60_000);
    const h = await restored([t]);
    await jest.advanceTimersByTimeAsync(9_999);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_WAITING);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_RETRY_WAIT);
  });

  it('re-arms a RETRY_WAIT with its un-jittered backoff minus its age', async () => {
    // work: initial 1 s × 3^(2-1) = 3 s after attempt 2 failed; 1 s already gone.
    const t = record(S.TASK_STATE_RETRY_WAIT, 'work', 1_000, 2);
    const h = await restored([t]);
    await jest.advanceTimersByTimeAsync(1_999);
    expect(h.store.tasks.get(t.taskId)?.state).toBe(S.TASK_STATE_RETRY_WAIT);
    await jest.advanceTimersByTimeAsync(1);
    expect(h.store.tasks.get(t.taskId)).toMatchObject({ state: S.TASK_STATE_QUEUED, attempt: 3 });
  });

  it('skips feed transitions the records already hold', async () => {
    const h = harness();
    h.store.create('t1', 'jobs', 1, 'fetch');
    const old = [...h.store.feed];
    const t = { ...h.store.tasks.get('t1')! };
    const fresh = harness();
    fresh.store.tasks.set('t1', { ...t });
    await fresh.timers.prepareRestore([t]);
    fresh.timers.restore([t], t.revision);
    const armedAt = fresh.timers.armed('t1')?.at;
    await jest.advanceTimersByTimeAsync(1_000);
    // The feed replays the overlap: the deadline must not move.
    await fresh.timers.prepare(old);
    fresh.timers.apply(old);
    expect(fresh.timers.armed('t1')?.at).toBe(armedAt);
  });
});
