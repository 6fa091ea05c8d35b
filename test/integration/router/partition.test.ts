import fs from 'node:fs';
import path from 'node:path';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { Transition } from '../../../gen/dsat/task/v1/task';
import type { SeenTransition } from '../../helpers/mesh-harness';
import { FeedRecorder, waitForLog } from '../../helpers/mesh-harness';
import { NetnsLab, netnsUnavailable } from '../../helpers/netns';
import { ProcessMesh, submitMany } from '../../helpers/process-mesh';
import { RawWorker } from '../../helpers/raw-worker';
import { eventually, linear } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

/**
 * T05 and T06: worker W in its own network namespace, joined to the router's by a veth pair, is
 * cut off by taking the link down for 15 s. With keepalive the router sees the stream die within
 * keepalive_time + keepalive_timeout; without it only the lease (the heartbeat timeout) notices.
 */
jest.setTimeout(90_000);

const RECORDED = path.join(__dirname, '../../fixtures/handlers/recorded.ts');
const S = TaskState;
const PARTITION_MS = 15_000;
const KEEPALIVE_MS = 2_000;
const KEEPALIVE_TIMEOUT_MS = 1_000;
/** The stage's heartbeat timeout: longer than keepalive detection, so T05 shows the keepalive. */
const LEASE_MS = 6_000;
/** The attempt's work: it ends inside the partition. */
const WORK_MS = 4_000;
const DETECTION_BOUND_MS = KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS + 1_000;

interface Exec {
  kind: string;
  taskId: string;
  attempt: number;
  worker: string;
}

function execs(file: string): Exec[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Exec);
}

const is = (taskId: string, state: TaskState, attempt: number) => (t: Transition) =>
  t.taskId === taskId && t.toState === state && t.attempt === attempt;

const unavailable = netnsUnavailable();

describe('a worker cut off by a network partition', () => {
  const lab = new NetnsLab('p');
  let mesh: ProcessMesh | undefined;
  let feed: FeedRecorder | undefined;
  const dirs: { cleanup(): void }[] = [];
  const raws: RawWorker[] = [];

  beforeAll(() => {
    // CI runs as root with iproute2 from scripts/test-setup.sh; anywhere else, fail and say why.
    if (unavailable) throw new Error(`${unavailable}: T05/T06 cannot run here`);
  });
  afterEach(async () => {
    for (const r of raws.splice(0)) r.close();
    await feed?.stop();
    await mesh?.stop();
    await lab.cleanup();
    for (const d of dirs.splice(0)) d.cleanup();
  });
  afterAll(() => lab.cleanup());

  /**
   * Status, tracker and router in this namespace (the router on every interface); worker W in its
   * own namespace runs the one task's first attempt; worker B, here, is started by the test once
   * W is cut off, so that attempt 1 is surely W's and finishes inside the partition.
   */
  async function setUp(keepalive: boolean) {
    const tmp = tempDir('dsat-netns-');
    dirs.push(tmp);
    const history = path.join(tmp.path, 'history.jsonl');
    const link = await lab.add(0);
    const ka = keepalive
      ? { time: `${KEEPALIVE_MS}ms`, timeout: `${KEEPALIVE_TIMEOUT_MS}ms` }
      : { time: '0', timeout: '0' };
    const kaFlags = ['--keepalive-time', ka.time, '--keepalive-timeout', ka.timeout];
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startTracker();
    const router = await mesh.startRouter(['--host', '0.0.0.0', '--log-level', 'info', ...kaFlags]);
    const port = router.address.split(':').pop()!;
    const p = linear('part', ['work'], { heartbeatTimeoutMs: LEASE_MS, maxAttempts: 3 });
    p.stages[0]!.backoff = {
      initial: { seconds: 0, nanos: 200_000_000 },
      max: { seconds: 1, nanos: 0 },
      multiplier: 2,
      jitter: 0,
    };
    await mesh.savePipeline(p);
    const env = { DSAT_TEST_HISTORY: history };
    const workerFlags = ['--concurrency', '1', '--max-reconnect-backoff', '1s', ...kaFlags];
    const w = await mesh.startWorker(
      RECORDED,
      ['work'],
      workerFlags,
      [`${link.hostIp}:${port}`],
      { ...env, DSAT_WORKER_ID: 'w-cut' },
      link.ns,
    );
    await mesh.waitForWorkers(['work']);
    const rec = new FeedRecorder(mesh.status);
    feed = rec;
    const ids = await submitMany(mesh.router(), [
      {
        clientRef: 'one',
        task: {
          pipeline: 'part',
          payload: Buffer.from(JSON.stringify({ i: 0, ms: WORK_MS })),
          contentType: 'application/json',
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      },
    ]);
    const taskId = ids.get('one')!;
    await rec.waitFor('attempt 1 running', is(taskId, S.TASK_STATE_RUNNING, 1), 20_000);
    await eventually(() => execs(history).length === 1, 20_000, 'attempt 1 started on W');
    // B starts only now, so that attempt 1 is surely W's; the test cuts W off first.
    const startB = async () => {
      const b = await mesh!.startWorker(RECORDED, ['work'], workerFlags, mesh!.routers, {
        ...env,
        DSAT_WORKER_ID: 'w-b',
      });
      return b;
    };
    return { mesh, feed: rec, link, history, router, w, startB, taskId };
  }

  it('T05: with keepalive 2 s / 1 s the router sees the stream die within 3 s (+1 s), re-dispatches to another worker, refuses the late result; ≤2 executions', async () => {
    const { mesh, feed, link, history, router, w, startB, taskId } = await setUp(true);
    await link.down();
    const downAt = performance.now();
    const since = (s: SeenTransition | number) => (typeof s === 'number' ? s : s.seenAt) - downAt;
    // The router: the stream's end, seen by keepalive, requeues the attempt (WORKER_LOST). W: its
    // own keepalive ends the stream too, and it aborts the attempt it can no longer report.
    const routerSaw = waitForLog(router.p, /worker stream ended with attempts in flight/, 20_000);
    const wSaw = waitForLog(w.p, /router stream broke/, 20_000);
    await startB();

    const endedAt = await routerSaw;
    const lost = await feed.waitFor('WORKER_LOST', is(taskId, S.TASK_STATE_QUEUED, 2), 10_000);
    expect(lost.t.reason).toBe('WORKER_LOST');
    const wSawAt = await wSaw;
    const redispatched = await feed.waitFor(
      'attempt 2 on B',
      is(taskId, S.TASK_STATE_RUNNING, 2),
      10_000,
    );
    expect(redispatched.t.workerId).toBe('w-b');
    const done = await feed.waitFor(
      'SUCCEEDED',
      (t) => t.taskId === taskId && t.toState === S.TASK_STATE_SUCCEEDED,
      20_000,
    );
    expect(done.t.attempt).toBe(2);
    process.stderr.write(
      `T05: router saw the stream end after ${since(endedAt).toFixed(0)} ms, WORKER_LOST on the feed after ${since(lost).toFixed(0)} ms, W saw it after ${since(wSawAt).toFixed(0)} ms, attempt 2 running after ${since(redispatched).toFixed(0)} ms\n`,
    );
    expect(since(endedAt)).toBeLessThanOrEqual(DETECTION_BOUND_MS);
    expect(since(wSawAt)).toBeLessThanOrEqual(DETECTION_BOUND_MS);

    // Heal after 15 s: W comes back and holds a new stream.
    await new Promise((r) => setTimeout(r, Math.max(0, PARTITION_MS - since(performance.now()))));
    await link.up();
    const routerClient = mesh.router();
    await eventually(
      async () =>
        (await routerClient.getRouterLoad({})).stages.find((s) => s.stage === 'work')?.workers ===
        2,
      30_000,
      'W to reconnect after the partition',
    );
    // The late result of attempt 1, as W would send it now on its new stream: refused as stale.
    const late = new RawWorker(mesh.routers[0]!);
    raws.push(late);
    late.hello('w-cut', ['work'], 1);
    await late.until(() => late.welcome !== undefined, 10_000, 'welcome');
    late.result({ taskId, attempt: 1 }, JSON.stringify({ i: 0, by: 'w-cut' }));
    await late.until(() => late.acks.length > 0, 10_000, 'ack of the late result');
    expect(late.acks[0]).toMatchObject({
      taskId,
      attempt: 1,
      accepted: false,
      reason: 'STALE_ATTEMPT',
    });

    const task = (await mesh.status.getTask({ taskId })).task!;
    expect(task.state).toBe(S.TASK_STATE_SUCCEEDED);
    expect(task.attempt).toBe(2);
    const history$ = (await mesh.status.getTaskHistory({ taskId })).transitions;
    expect(history$.filter((t) => t.toState === S.TASK_STATE_SUCCEEDED)).toHaveLength(1);
    const runs = execs(history).filter((e) => e.taskId === taskId);
    expect(runs.map((e) => `${e.worker}@${e.attempt}`)).toEqual(['w-cut@1', 'w-b@2']);
  });

  it('T06: without keepalive the stream stays open and only the lease notices; the task is re-dispatched within the lease timeout and the late result is refused', async () => {
    const { mesh, feed, link, history, router, w, startB, taskId } = await setUp(false);
    await link.down();
    const downAt = performance.now();
    const since = (s: SeenTransition | number) => (typeof s === 'number' ? s : s.seenAt) - downAt;
    await startB();

    const timedOut = await feed.waitFor(
      'HEARTBEAT_TIMEOUT',
      is(taskId, S.TASK_STATE_TIMED_OUT, 1),
      20_000,
    );
    expect(timedOut.t.reason).toBe('HEARTBEAT_TIMEOUT');
    const redispatched = await feed.waitFor(
      'attempt 2 on B',
      is(taskId, S.TASK_STATE_RUNNING, 2),
      10_000,
    );
    expect(redispatched.t.workerId).toBe('w-b');
    process.stderr.write(
      `T06: lease lost after ${since(timedOut).toFixed(0)} ms, attempt 2 running after ${since(redispatched).toFixed(0)} ms (lease ${LEASE_MS} ms)\n`,
    );
    // The last heartbeat came at most one interval (1 s) before the cut, and the sweep runs every
    // 250 ms: the lease ends between LEASE-1 s and LEASE, plus this machine's noise.
    expect(since(timedOut)).toBeGreaterThanOrEqual(LEASE_MS - 1_500);
    expect(since(timedOut)).toBeLessThanOrEqual(LEASE_MS + 2_000);
    // Re-dispatch: the tracker's retry after a 200 ms backoff, still within the lease timeout.
    expect(redispatched.seenAt - timedOut.seenAt).toBeLessThanOrEqual(LEASE_MS);
    // Nothing saw the stream end: the router still counts W's stream, and neither side logged it.
    expect(router.p.stderr.some((l) => /worker stream ended/.test(l))).toBe(false);
    expect(w.p.stderr.some((l) => /router stream broke/.test(l))).toBe(false);
    const done = await feed.waitFor(
      'SUCCEEDED',
      (t) => t.taskId === taskId && t.toState === S.TASK_STATE_SUCCEEDED,
      20_000,
    );
    expect(done.t.attempt).toBe(2);

    // Heal: the same TCP connection carries W's result of attempt 1, finished inside the cut.
    await new Promise((r) => setTimeout(r, Math.max(0, PARTITION_MS - since(performance.now()))));
    await link.up();
    await waitForLog(w.p, /router refused a report/, 40_000);
    const refusal = w.p.stderr.find((l) => /router refused a report/.test(l))!;
    expect(JSON.parse(refusal)).toMatchObject({ taskId, attempt: 1, reason: 'LEASE_LOST' });
    expect(router.p.stderr.some((l) => /worker stream ended/.test(l))).toBe(false);

    const task = (await mesh.status.getTask({ taskId })).task!;
    expect(task.state).toBe(S.TASK_STATE_SUCCEEDED);
    expect(task.attempt).toBe(2);
    const runs = execs(history).filter((e) => e.taskId === taskId);
    expect(runs.map((e) => `${e.worker}@${e.attempt}`)).toEqual(['w-cut@1', 'w-b@2']);
  });
});
