import path from 'node:path';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { ExecLog, FAULT_MODES, applyPipeline } from '../../helpers/exec-log';
import { FeedRecorder, is, steps, TIMED_OUT_THEN_RETRIED } from '../../helpers/mesh-harness';
import { jsonEntry, ProcessMesh, submitMany } from '../../helpers/process-mesh';
import { spawnProcess } from '../../helpers/processes';
import { eventually } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';
import { isTerminalState } from '../../../services/status/task-state-machine';

jest.setTimeout(60_000);

const S = TaskState;
const SILENT_WORKER = path.join(__dirname, '../../fixtures/workers/silent-worker.ts');

/**
 * Leases with every service and worker its own process: status (LevelDB in a temp dir), tracker,
 * one router, and `dsat worker` processes running test/fixtures/handlers/fault-modes.ts.
 */
describe('leases and heartbeats through real processes', () => {
  let mesh: ProcessMesh;
  let feed: FeedRecorder | undefined;
  const dirs: { cleanup(): void }[] = [];
  afterEach(async () => {
    await feed?.stop();
    feed = undefined;
    await mesh?.stop();
    for (const d of dirs.splice(0)) d.cleanup();
  });

  async function start(routerFlags: string[] = []) {
    const tmp = tempDir();
    dirs.push(tmp);
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startTracker();
    await mesh.startRouter(routerFlags);
    feed = new FeedRecorder(mesh.status, (await mesh.status.getStoreStats({})).revision);
    return new ExecLog(tmp.path);
  }

  it('T07: a worker paused for 2× its lease loses it; the task is redone elsewhere, the late result is refused, and the resumed worker aborts its other attempt', async () => {
    // Keepalive would see the paused process as a dead connection (T05's subject); here the
    // lease alone must notice, so pings are far apart on both sides.
    const keepalive = ['--keepalive-time', '60s', '--keepalive-timeout', '20s'];
    const log = await start(['--heartbeat-interval', '500ms', ...keepalive]);
    await applyPipeline(
      mesh,
      `
name: paused
stages:
  - name: paused
    heartbeat_timeout: 3s
    max_attempts: 3
    backoff: { initial: 200ms, jitter: 0 }
`,
    );
    const workerFlags = (id: string) => ['--worker-id', id, '--concurrency', '2', ...keepalive];
    const a = await mesh.startWorker(FAULT_MODES, ['paused'], workerFlags('worker-a'), undefined, {
      ...log.env,
    });
    await mesh.waitForWorkers(['paused']);
    const ids = await submitMany(mesh.router(), [
      jsonEntry('paused', 'x', { i: 0, mode: 'stall' }),
      jsonEntry('paused', 'y', { i: 1, mode: 'hold', file: 'never' }),
    ]);
    const [x, y] = [ids.get('x')!, ids.get('y')!];
    const pidA = a.p.child.pid!;
    for (const id of [x, y]) {
      await log.waitFor(`${id} started on A`, (e) => e.taskId === id && e.pid === pidA);
    }
    // X enters CPU-bound work that does not yield; A is paused in the middle of it, so that on
    // resumption X's result goes out before A reads anything the router sent meanwhile.
    log.touch('go');
    await log.waitFor('X spinning', (e) => e.taskId === x && e.event === 'spinning');
    a.p.kill('SIGSTOP');
    const pausedAt = performance.now();
    const b = await mesh.startWorker(FAULT_MODES, ['paused'], workerFlags('worker-b'), undefined, {
      ...log.env,
    });
    const pidB = b.p.child.pid!;
    for (const id of [x, y]) {
      await feed!.waitFor(`${id} SUCCEEDED#2`, is(id, S.TASK_STATE_SUCCEEDED, 2), 30_000);
    }
    const left = 2 * 3_000 - (performance.now() - pausedAt);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    log.touch('release');
    a.p.kill('SIGCONT');

    const aborted = await log.waitFor(
      'Y aborted on A',
      (e) => e.taskId === y && e.pid === pidA && e.event === 'aborted',
    );
    expect(aborted).toMatchObject({ attempt: 1, reason: 'LEASE_LOST' });
    await log.waitFor(
      'X finished on A',
      (e) => e.taskId === x && e.pid === pidA && e.event === 'done',
    );
    const refusal = await eventually(
      () =>
        a.p.stderr
          .filter((l) => l.includes('router refused a report'))
          .map((l) => JSON.parse(l) as { taskId: string; attempt: number; reason: string })
          .find((r) => r.taskId === x),
      15_000,
      "the router's refusal of X's late result",
    );
    expect(refusal).toMatchObject({ attempt: 1, reason: 'LEASE_LOST' });
    // Y's aborted attempt reported nothing, so nothing of Y was refused.
    expect(a.p.stderr.filter((l) => l.includes('router refused') && l.includes(y))).toEqual([]);

    for (const id of [x, y]) {
      const { transitions } = await mesh.status.getTaskHistory({ taskId: id });
      expect(steps(transitions)).toEqual(TIMED_OUT_THEN_RETRIED);
      const timedOut = transitions.find((t) => t.toState === S.TASK_STATE_TIMED_OUT)!;
      expect(timedOut).toMatchObject({ reason: 'HEARTBEAT_TIMEOUT', workerId: 'worker-a' });
      expect(transitions.find((t) => t.reason === 'RETRY')?.toState).toBe(S.TASK_STATE_QUEUED);
      const done = transitions[transitions.length - 1]!;
      expect(done.workerId).toBe('worker-b');
      expect(JSON.parse(done.payload!.data.toString())).toMatchObject({ by: pidB, attempt: 2 });
    }
    // The late result changed nothing: X is still the SUCCEEDED attempt 2 that B produced.
    const { task } = await mesh.status.getTask({ taskId: x });
    expect(task).toMatchObject({ state: S.TASK_STATE_SUCCEEDED, attempt: 2 });
    expect(JSON.parse(task!.output!.data.toString())).toMatchObject({ by: pidB });
    expect(feed!.seen.filter((s) => isTerminalState(s.t.toState))).toHaveLength(2);
  });

  it('T09: a 6 s attempt heartbeating every 1 s outlives its 3 s heartbeat timeout; after a kill -9 the retry resumes from the progress its heartbeats carried', async () => {
    const log = await start(['--heartbeat-interval', '1s']);
    for (const name of ['steady', 'resumable']) {
      await applyPipeline(
        mesh,
        `
name: ${name}
stages:
  - name: ${name}
    heartbeat_timeout: 3s
    max_attempts: ${name === 'steady' ? 1 : 3}
`,
      );
    }
    const flags = ['--concurrency', '1'];
    await mesh.startWorker(FAULT_MODES, ['steady'], flags, undefined, log.env);
    const r1 = await mesh.startWorker(FAULT_MODES, ['resumable'], flags, undefined, log.env);
    const r2 = await mesh.startWorker(FAULT_MODES, ['resumable'], flags, undefined, log.env);
    await mesh.waitForWorkers(['steady']);
    await mesh.waitForWorkers(['resumable'], undefined, 2);
    const router = mesh.router();
    const ids = await submitMany(router, [
      jsonEntry('steady', 'steady', { i: 0, mode: 'steps', steps: 6 }),
      jsonEntry('resumable', 'resumable', { i: 1, mode: 'steps', steps: 6 }),
    ]);
    const [steady, resumable] = [ids.get('steady')!, ids.get('resumable')!];

    // Kill the worker running the resumable task once it has done 3 of its 6 steps.
    const third = await log.waitFor(
      'step 3 of the resumable task',
      (e) => e.taskId === resumable && e.event === 'step' && e.k === 3,
    );
    const victim = [r1, r2].find((w) => w.p.child.pid === third.pid)!;
    victim.p.kill('SIGKILL');
    await victim.p.exited;

    const ok = await feed!.waitFor('steady SUCCEEDED', is(steady, S.TASK_STATE_SUCCEEDED), 30_000);
    expect(ok.t.attempt).toBe(1);
    const running = feed!.of(steady).find((s) => s.t.toState === S.TASK_STATE_RUNNING)!;
    expect(ok.seenAt - running.seenAt).toBeGreaterThanOrEqual(5_500);
    expect(feed!.of(steady).map((s) => S[s.t.toState])).not.toContain('TASK_STATE_TIMED_OUT');

    const done = await feed!.waitFor(
      'resumable SUCCEEDED',
      is(resumable, S.TASK_STATE_SUCCEEDED),
      30_000,
    );
    expect(done.t.attempt).toBe(2);
    const { transitions } = await mesh.status.getTaskHistory({ taskId: resumable });
    const requeue = transitions.find((t) => t.toState === S.TASK_STATE_QUEUED && t.attempt === 2);
    expect(requeue?.reason).toBe('WORKER_LOST');
    // Attempt 2 got what the heartbeats had carried when the worker died: one of the steps done.
    const resumed = await log.waitFor(
      'attempt 2 resumed',
      (e) => e.taskId === resumable && e.attempt === 2 && e.event === 'resumed',
    );
    const stored = resumed.from as number;
    expect(stored).toBeGreaterThanOrEqual(1);
    expect(stored).toBeLessThanOrEqual(3);
    expect(resumed.message).toBe(`step ${stored} of 6`);
    const secondSteps = log
      .read()
      .filter((e) => e.taskId === resumable && e.attempt === 2 && e.event === 'step')
      .map((e) => e.k);
    expect(secondSteps).toEqual(Array.from({ length: 6 - stored }, (_, j) => stored + 1 + j));
    expect(JSON.parse(done.t.payload!.data.toString())).toMatchObject({ resumedFrom: stored });
  });

  it('T10: a worker that stops heartbeating but keeps running times out after the 3 s heartbeat timeout; the result it sends later is refused', async () => {
    await start();
    await applyPipeline(
      mesh,
      `
name: silent
stages:
  - name: silent
    heartbeat_timeout: 3s
    max_attempts: 3
    backoff: { initial: 200ms, jitter: 0 }
`,
    );
    const worker = spawnProcess(process.execPath, [
      '-r',
      'tsx/cjs',
      SILENT_WORKER,
      mesh.routers[0]!,
      'silent',
      '1500',
      '6000',
    ]);
    mesh.procs.push(worker);
    await worker.waitForLine(/"event":"welcome"/);
    await mesh.waitForWorkers(['silent']);
    const silent = worker.waitForLine(/"event":"silent"/).then(() => performance.now());
    const ids = await submitMany(mesh.router(), [jsonEntry('silent', 't10', { i: 0 })]);
    const id = ids.get('t10')!;
    const silentAt = await silent;
    const timedOut = await feed!.waitFor('TIMED_OUT#1', is(id, S.TASK_STATE_TIMED_OUT, 1), 10_000);
    const running = feed!.of(id).find((s) => s.t.toState === S.TASK_STATE_RUNNING)!;
    // Not while it was heartbeating, and within the timeout (+1 s) of its last heartbeat.
    expect(timedOut.seenAt - running.seenAt).toBeGreaterThanOrEqual(1_500 + 2_500);
    expect(timedOut.seenAt - silentAt).toBeGreaterThanOrEqual(2_500);
    expect(timedOut.seenAt - silentAt).toBeLessThanOrEqual(3_000 + 1_000);
    expect(timedOut.t).toMatchObject({ reason: 'HEARTBEAT_TIMEOUT' });

    const ack = await worker.waitForLine(/"event":"ack".*"attempt":1/, 15_000);
    expect(JSON.parse(ack.input!)).toMatchObject({
      taskId: id,
      attempt: 1,
      accepted: false,
      reason: 'LEASE_LOST',
    });
    expect(
      worker.stdout.some((l) => l.includes('"event":"cancel"') && l.includes('LEASE_LOST')),
    ).toBe(true);
    await feed!.waitFor('SUCCEEDED#2', is(id, S.TASK_STATE_SUCCEEDED, 2), 15_000);
    const { transitions } = await mesh.status.getTaskHistory({ taskId: id });
    expect(steps(transitions)).toEqual(TIMED_OUT_THEN_RETRIED);
  });
});
