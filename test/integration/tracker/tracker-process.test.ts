import { TaskState } from '../../../gen/dsat/task/v1/task';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';
import type { RunningProcess } from '../../helpers/processes';
import type { StatusClient } from '../../helpers/mesh-harness';
import {
  FeedRecorder,
  is,
  TestRouter,
  spawnStatus,
  spawnTracker,
  statusClient,
  steps,
  TIMED_OUT_THEN_RETRIED,
  trackerClient,
  waitForLog,
} from '../../helpers/mesh-harness';
import { tempDir } from '../../helpers/temp-dir';
import { isTerminalState } from '../../../services/status/task-state-machine';

jest.setTimeout(90_000);

const S = TaskState;

/**
 * Status and tracker as separate processes; the test writes as the router would, through the
 * status service, and watches the feed for what the tracker writes.
 */
describe('the tracker as its own process, with a real status service', () => {
  const procs: RunningProcess[] = [];
  const cleanups: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    for (const p of procs.splice(0)) p.kill('SIGKILL');
  });

  async function mesh(yaml: string) {
    const dir = tempDir();
    cleanups.push(() => dir.cleanup());
    const status = await spawnStatus(dir.path);
    procs.push(status.p);
    const tracker = await spawnTracker(status.address);
    procs.push(tracker.p);
    const client: StatusClient = statusClient(status.address);
    const applied = await trackerClient(tracker.address).applyPipeline({
      pipeline: parsePipelineText(yaml),
      validateOnly: false,
    });
    const feed = new FeedRecorder(client, (await client.getStoreStats({})).revision);
    cleanups.push(() => feed.stop());
    return {
      status,
      tracker,
      client,
      pipeline: applied.pipeline!,
      feed,
      router: new TestRouter(client),
    };
  }

  it('T08: a 2 s run timeout without heartbeats times out at 2 s ± 0.5 s, retries after backoff, ends once', async () => {
    const m = await mesh(`
name: t08
stages:
  - name: work
    run_timeout: 2s
    max_attempts: 3
    backoff: { initial: 1s, jitter: 0.2 }
`);
    expect(m.pipeline.version).toBe(1);
    const id = await m.router.submit(m.pipeline);
    await m.router.start(id, 1);
    const running = await m.feed.waitFor('RUNNING#1', is(id, S.TASK_STATE_RUNNING, 1), 5_000);
    const timedOut = await m.feed.waitFor('TIMED_OUT#1', is(id, S.TASK_STATE_TIMED_OUT, 1), 5_000);
    const late = timedOut.seenAt - running.seenAt;
    expect(late).toBeGreaterThanOrEqual(1_500);
    expect(late).toBeLessThanOrEqual(2_500);
    expect(timedOut.t).toMatchObject({ fromState: S.TASK_STATE_RUNNING, reason: 'RUN_TIMEOUT' });
    expect(timedOut.t.error?.code).toBe('RUN_TIMEOUT');
    const wait = await m.feed.waitFor('RETRY_WAIT#1', is(id, S.TASK_STATE_RETRY_WAIT, 1), 2_000);
    // Written in the same batch as the timeout: the next revision.
    expect(wait.t.revision).toBe(timedOut.t.revision + 1);
    const retry = await m.feed.waitFor('QUEUED#2', is(id, S.TASK_STATE_QUEUED, 2), 5_000);
    expect(retry.t.reason).toBe('RETRY');
    const backoff = retry.seenAt - wait.seenAt;
    expect(backoff).toBeGreaterThanOrEqual(800 - 100);
    expect(backoff).toBeLessThanOrEqual(1_200 + 500);

    await m.router.start(id, 2);
    await m.router.succeed(id, 2);
    await m.feed.waitFor('SUCCEEDED', is(id, S.TASK_STATE_SUCCEEDED), 5_000);
    const { transitions } = await m.client.getTaskHistory({ taskId: id });
    const terminal = transitions.filter((t) => isTerminalState(t.toState));
    expect(terminal).toHaveLength(1);
    expect(steps(transitions)).toEqual(TIMED_OUT_THEN_RETRIED);
  });

  it('fires a timeout armed before the tracker was killed -9, at its time, from the restarted tracker', async () => {
    const m = await mesh(`
name: crash
stages:
  - name: work
    run_timeout: 8s
`);
    const id = await m.router.submit(m.pipeline);
    await m.router.start(id, 1);
    const running = await m.feed.waitFor('RUNNING#1', is(id, S.TASK_STATE_RUNNING, 1), 5_000);
    // Let the first tracker hold the timer for a moment, then kill it with the deadline ahead.
    await new Promise((r) => setTimeout(r, 1_000));
    m.tracker.p.kill('SIGKILL');
    await m.tracker.p.exited;
    const again = await spawnTracker(m.status.address);
    procs.push(again.p);
    const rearmed = await waitForLog(again.p, /timers re-armed from the store/);
    const timedOut = await m.feed.waitFor('TIMED_OUT#1', is(id, S.TASK_STATE_TIMED_OUT, 1), 20_000);
    const at = timedOut.seenAt - running.seenAt;
    // Never early; on time, or at once when a loaded machine brought the tracker back too late.
    expect(at).toBeGreaterThanOrEqual(8_000 - 300);
    expect(at).toBeLessThanOrEqual(Math.max(8_000, rearmed - running.seenAt) + 1_000);
    expect(m.feed.of(id).filter((s) => s.t.toState === S.TASK_STATE_TIMED_OUT)).toHaveLength(1);
  });

  it('fires at once after start-up a timeout that fell due while the tracker was down', async () => {
    const m = await mesh(`
name: outage
stages:
  - name: work
    run_timeout: 2s
    max_attempts: 1
`);
    const id = await m.router.submit(m.pipeline);
    await m.router.start(id, 1);
    await m.feed.waitFor('RUNNING#1', is(id, S.TASK_STATE_RUNNING, 1), 5_000);
    m.tracker.p.kill('SIGKILL');
    await m.tracker.p.exited;
    // The deadline passes while no tracker runs.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(m.feed.of(id).some((s) => s.t.toState === S.TASK_STATE_TIMED_OUT)).toBe(false);
    const again = await spawnTracker(m.status.address);
    procs.push(again.p);
    const rearmed = await waitForLog(again.p, /timers re-armed from the store/);
    const timedOut = await m.feed.waitFor('TIMED_OUT#1', is(id, S.TASK_STATE_TIMED_OUT, 1), 10_000);
    expect(timedOut.seenAt - rearmed).toBeLessThan(1_000);
    expect(timedOut.seenAt - again.listenedAt).toBeLessThan(3_000);
    const dead = await m.feed.waitFor('DEAD_LETTERED', is(id, S.TASK_STATE_DEAD_LETTERED), 2_000);
    expect(dead.t).toMatchObject({ reason: 'ATTEMPTS_EXHAUSTED', error: { code: 'RUN_TIMEOUT' } });
  });

  it('redrives a dead-lettered task to QUEUED attempt 1 at the stage it died, and purges only on request', async () => {
    const m = await mesh(`
name: dlq
stages:
  - name: first
    next: [work]
  - name: work
    run_timeout: 1s
    max_attempts: 1
`);
    const tracker = trackerClient(m.tracker.address);
    const [a, b] = [
      await m.router.submit(m.pipeline, 'work'),
      await m.router.submit(m.pipeline, 'work'),
    ];
    await m.router.start(a, 1);
    await m.router.start(b, 1);
    await m.feed.waitFor('DEAD_LETTERED a', is(a, S.TASK_STATE_DEAD_LETTERED), 5_000);
    await m.feed.waitFor('DEAD_LETTERED b', is(b, S.TASK_STATE_DEAD_LETTERED), 5_000);

    const listed = await tracker.listDeadLettered({
      pipeline: 'dlq',
      stage: '',
      pageSize: 0,
      pageToken: '',
    });
    expect(listed.tasks.map((t) => t.taskId).sort()).toEqual([a, b].sort());
    expect(listed.tasks[0]?.lastError?.code).toBe('RUN_TIMEOUT');

    await expect(tracker.purgeTasks({ taskIds: [], filter: undefined })).rejects.toMatchObject({
      code: 3,
    });
    const redriven = await tracker.redriveTasks({ taskIds: [a], filter: undefined });
    expect(redriven.taskIds).toEqual([a]);
    const queued = await m.feed.waitFor(
      'QUEUED REDRIVE',
      (t) => t.taskId === a && t.reason === 'REDRIVE',
      5_000,
    );
    expect(queued.t).toMatchObject({ toState: S.TASK_STATE_QUEUED, attempt: 1, stage: 'work' });
    const { task } = await m.client.getTask({ taskId: a });
    expect(task).toMatchObject({ state: S.TASK_STATE_QUEUED, attempt: 1, stage: 'work' });
    // A second redrive finds nothing dead-lettered; a purge leaves the unfinished task alone.
    expect((await tracker.redriveTasks({ taskIds: [a], filter: undefined })).taskIds).toEqual([]);
    expect((await tracker.purgeTasks({ taskIds: [a, b], filter: undefined })).purgedCount).toBe(1);
    await expect(m.client.getTask({ taskId: b })).rejects.toMatchObject({ code: 5 });
    expect((await m.client.getTask({ taskId: a })).task?.state).toBe(S.TASK_STATE_QUEUED);
  });
});
