import fs from 'node:fs';
import path from 'node:path';
import { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { jsonEntry, ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import { eventually, linear } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(120_000);

const SLEEPY = path.join(__dirname, '../../fixtures/handlers/sleepy.ts');

interface Execution {
  taskId: string;
  attempt: number;
  pid: number;
  i: number;
}

function executions(file: string): Execution[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Execution);
}

function entries(n: number, prefix: string) {
  return Array.from({ length: n }, (_, i) => jsonEntry('sleepy', `${prefix}-${i}`, { i }));
}

describe('faults, with every service and worker in its own process', () => {
  let mesh: ProcessMesh;
  const dirs: { cleanup(): void }[] = [];
  afterEach(async () => {
    await mesh?.stop();
    for (const d of dirs.splice(0)) d.cleanup();
  });

  it('T01: kill -9 of a worker with tasks in flight loses nothing; each of its attempts is retried exactly once', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const log = path.join(tmp.path, 'executions.jsonl');
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startRouter();
    await mesh.savePipeline(linear('sleepy', ['work']));
    const env = { DSAT_TEST_EXEC_LOG: log };
    const a = await mesh.startWorker(SLEEPY, ['work'], ['--concurrency', '8'], mesh.routers, env);
    const b = await mesh.startWorker(SLEEPY, ['work'], ['--concurrency', '8'], mesh.routers, env);
    await mesh.waitForWorkers(['work'], mesh.routers[0], 2);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'sleepy');
    const ids = await submitMany(mesh.router(), entries(200, 't01'));
    // Kill A once it holds at least 3 attempts.
    const infoA = mesh.worker(a.address);
    const end = Date.now() + 20_000;
    for (;;) {
      const info = await infoA.getWorkerInfo({});
      if (info.inFlight >= 3) break;
      if (Date.now() > end) throw new Error('worker A never held 3 attempts');
      await new Promise((r) => setTimeout(r, 20));
    }
    a.p.kill('SIGKILL');
    await a.p.exited;
    await feed.waitFor(200, 60_000);
    await feed.stop();
    const pidA = a.p.child.pid!;
    const execs = executions(log);
    const lost = [...ids.values()].filter((id) => !feed.finals.has(id));
    expect(lost).toEqual([]);
    const outputs = new Set<string>();
    for (const id of ids.values()) {
      const finals = feed.finals.get(id)!;
      expect(finals).toHaveLength(1);
      expect(finals[0]!.toState).toBe(TaskState.TASK_STATE_SUCCEEDED);
      outputs.add(finals[0]!.payload!.data.toString());
    }
    expect(outputs.size).toBe(200);
    // The attempts A held when it died (running, or assigned and not yet started): each requeued
    // exactly once, as attempt 2; no task ran more often than it has attempts.
    const violations: string[] = [];
    let requeued = 0;
    for (const taskId of ids.values()) {
      const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
      const lostOnes = history.filter((t) => t.reason === 'WORKER_LOST');
      const runs = execs.filter((e) => e.taskId === taskId);
      const attempt = (await mesh.status.getTask({ taskId })).task!.attempt;
      if (runs.length > attempt)
        violations.push(`${taskId}: ${runs.length} runs, ${attempt} attempts`);
      if (attempt !== 1 + lostOnes.length)
        violations.push(`${taskId}: attempt ${attempt} without a reason`);
      if (runs.filter((e) => e.pid !== pidA).length > 1)
        violations.push(`${taskId}: ran twice on B`);
      if (lostOnes.length === 0) continue;
      requeued++;
      if (lostOnes.length !== 1 || lostOnes[0]!.attempt !== 2) {
        violations.push(`${taskId}: requeued ${lostOnes.length} times`);
      }
      if (runs.length > 2) violations.push(`${taskId}: ran ${runs.length} times`);
    }
    expect(violations).toEqual([]);
    expect(requeued).toBeGreaterThanOrEqual(3);
    expect(b.p.child.exitCode).toBeNull();
  });

  it('T08 with real processes: a worker stopped (SIGSTOP) mid-attempt under a 2 s run timeout is timed out at 2 s ± 0.5 s, the task retried after its backoff on the other worker, and it ends once', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const log = path.join(tmp.path, 'executions.jsonl');
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startTracker();
    await mesh.startRouter();
    await mesh.savePipeline(
      Pipeline.fromPartial({
        name: 't08',
        stages: [
          {
            name: 'work',
            runTimeout: { seconds: 2, nanos: 0 },
            maxAttempts: 3,
            backoff: { initial: { seconds: 1, nanos: 0 }, multiplier: 1 },
          },
        ],
      }),
    );
    const env = { DSAT_TEST_EXEC_LOG: log };
    const workers = [
      await mesh.startWorker(SLEEPY, ['work'], ['--concurrency', '1'], mesh.routers, env),
      await mesh.startWorker(SLEEPY, ['work'], ['--concurrency', '1'], mesh.routers, env),
    ];
    await mesh.waitForWorkers(['work'], mesh.routers[0], 2);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 't08');
    const ids = await submitMany(mesh.router(), [
      jsonEntry('t08', 'only', { i: 0, firstAttemptMs: 10_000 }),
    ]);
    const taskId = ids.get('only')!;
    // The worker that took attempt 1 stops in its 10 s of work: no result, no heartbeat.
    const first = await eventually(() => executions(log).find((e) => e.attempt === 1), 10_000);
    const stopped = workers.find((w) => w.p.child.pid === first.pid)!;
    stopped.p.child.kill('SIGSTOP');
    try {
      await feed.waitFor(1, 30_000);
    } finally {
      stopped.p.child.kill('SIGCONT');
    }
    await feed.stop();
    const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
    const at = (state: TaskState, attempt: number) =>
      history.find((t) => t.toState === state && t.attempt === attempt)?.at?.getTime();
    const ranFor = at(TaskState.TASK_STATE_TIMED_OUT, 1)! - at(TaskState.TASK_STATE_RUNNING, 1)!;
    expect(ranFor).toBeGreaterThanOrEqual(1_500);
    expect(ranFor).toBeLessThanOrEqual(2_500);
    const waited = at(TaskState.TASK_STATE_QUEUED, 2)! - at(TaskState.TASK_STATE_TIMED_OUT, 1)!;
    // 1 s less the default jitter (20%), and a little for the clocks of two processes.
    expect(waited).toBeGreaterThanOrEqual(700);
    const terminal = history.filter((t) =>
      [TaskState.TASK_STATE_SUCCEEDED, TaskState.TASK_STATE_FAILED].includes(t.toState),
    );
    expect(terminal.map((t) => [t.toState, t.attempt])).toEqual([
      [TaskState.TASK_STATE_SUCCEEDED, 2],
    ]);
    expect(executions(log).find((e) => e.attempt === 2)?.pid).not.toBe(first.pid);
    expect(feed.finals.get(taskId)).toHaveLength(1);
  });

  it('T02: a router killed with -9 while 500 tasks wait and 50 run, started again 2 s later, rebuilds its queues; the attempts it had dispatched come back as ROUTER_RESTART, none runs more than twice, and the worker is back within its reconnect backoff', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const log = path.join(tmp.path, 'executions.jsonl');
    const backoffMs = 1_000;
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    const first = await mesh.startRouter();
    const port = first.address.split(':').pop()!;
    await mesh.savePipeline(linear('sleepy', ['work']));
    const worker = await mesh.startWorker(
      SLEEPY,
      ['work'],
      ['--concurrency', '50', '--max-reconnect-backoff', `${backoffMs}ms`],
      mesh.routers,
      { DSAT_TEST_EXEC_LOG: log },
    );
    await mesh.waitForWorkers(['work']);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'sleepy');
    const ids = await submitMany(mesh.router(), entries(550, 'restart'));
    const infoW = mesh.worker(worker.address);
    await eventually(
      async () => (await infoW.getWorkerInfo({})).inFlight >= 50,
      20_000,
      'fifty attempts running',
    );
    first.p.kill('SIGKILL');
    await first.p.exited;
    await new Promise((r) => setTimeout(r, 2_000));
    // The same address again, so the worker finds it (it tries its routers with capped backoff).
    const again = await mesh.startRouter(['--port', port]);
    expect(again.address).toBe(first.address);
    const listening = Date.now();
    await mesh.waitForWorkers(['work']);
    // The backoff's cap, a second as the item allows, and a second for this machine's noise.
    expect(Date.now() - listening).toBeLessThanOrEqual(backoffMs + 2_000);
    await feed.waitFor(550, 90_000);
    await feed.stop();
    const execs = executions(log);
    const violations: string[] = [];
    let restarted = 0;
    for (const taskId of ids.values()) {
      const finals = feed.finals.get(taskId) ?? [];
      if (finals.length !== 1 || finals[0]!.toState !== TaskState.TASK_STATE_SUCCEEDED)
        violations.push(`${taskId}: ended ${finals.map((f) => f.toState).join(',') || 'never'}`);
      const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
      const restarts = history.filter((t) => t.reason === 'ROUTER_RESTART').length;
      const runs = execs.filter((e) => e.taskId === taskId).length;
      const attempt = (await mesh.status.getTask({ taskId })).task!.attempt;
      if (attempt !== 1 + restarts)
        violations.push(`${taskId}: attempt ${attempt} without a reason`);
      if (runs > attempt) violations.push(`${taskId}: ${runs} runs, ${attempt} attempts`);
      if (runs > 2) violations.push(`${taskId}: ran ${runs} times`);
      if (restarts > 0) restarted++;
    }
    expect(violations).toEqual([]);
    // Only what the killed router had dispatched comes back: the running 50 and any assigned.
    expect(restarted).toBeGreaterThanOrEqual(1);
    expect(restarted).toBeLessThanOrEqual(50);
  });
});
