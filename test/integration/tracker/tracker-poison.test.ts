import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { Transition } from '../../../gen/dsat/task/v1/task';
import { ExecLog, FAULT_MODES, applyPipeline } from '../../helpers/exec-log';
import { jsonEntry, ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import type { RunningProcess } from '../../helpers/processes';
import { eventually } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(60_000);

const S = TaskState;
const steps = (history: Transition[]) =>
  history.map((t) => `${S[t.toState]}#${t.attempt}${t.reason === '' ? '' : ` ${t.reason}`}`);

/**
 * Poison tasks and dead letters with every service and worker its own process: status (LevelDB
 * in a temp dir), tracker, one router, and `dsat worker` processes running
 * test/fixtures/handlers/fault-modes.ts.
 */
describe('poison tasks and dead letters through real processes', () => {
  let mesh: ProcessMesh;
  let supervising = false;
  const dirs: { cleanup(): void }[] = [];
  afterEach(async () => {
    supervising = false;
    await mesh?.stop();
    for (const d of dirs.splice(0)) d.cleanup();
  });

  async function start() {
    const tmp = tempDir();
    dirs.push(tmp);
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startTracker();
    await mesh.startRouter();
    return new ExecLog(tmp.path);
  }

  /** Keeps `n` workers running, starting a new one whenever one dies; resolves with the dead. */
  function supervise(n: number, startOne: () => Promise<{ p: RunningProcess }>): RunningProcess[] {
    supervising = true;
    const dead: RunningProcess[] = [];
    const slot = async () => {
      while (supervising) {
        const w = await startOne().catch(() => undefined);
        if (w === undefined) return;
        await w.p.exited;
        if (supervising) dead.push(w.p);
      }
    };
    for (let i = 0; i < n; i++) void slot();
    return dead;
  }

  it('T11: a payload that kills its worker is dead-lettered after 3 attempts with the history of each lost attempt; the 99 other tasks succeed and none is dropped', async () => {
    const log = await start();
    await applyPipeline(mesh, 'name: crashy\nstages: [{name: crashy, max_attempts: 3}]');
    // One task a worker at a time: a dying worker takes only the poison down with it.
    const dead = supervise(3, () =>
      mesh.startWorker(FAULT_MODES, ['crashy'], ['--concurrency', '1'], undefined, log.env),
    );
    await mesh.waitForWorkers(['crashy'], undefined, 3);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'crashy');
    const POISON = 37;
    const entries = Array.from({ length: 100 }, (_, i) =>
      jsonEntry('crashy', `t${i}`, i === POISON ? { i, mode: 'exit' } : { i, ms: 10 + (i % 30) }),
    );
    const ids = await submitMany(mesh.router(), entries);
    await feed.waitFor(100, 45_000);
    await feed.stop();
    const poison = ids.get(`t${POISON}`)!;

    // Nothing dropped: every task ended exactly once; the poison as the only dead letter.
    const ends = [...ids.values()].map((id) => feed.finals.get(id) ?? []);
    expect(ends.map((f) => f.length)).toEqual(ends.map(() => 1));
    const outcomes = ends.map((f) => `${S[f[0]!.toState]}#${f[0]!.attempt}`);
    expect(outcomes.filter((o) => o === 'TASK_STATE_SUCCEEDED#1')).toHaveLength(99);
    expect(feed.finals.get(poison)![0]).toMatchObject({
      toState: S.TASK_STATE_DEAD_LETTERED,
      attempt: 3,
      reason: 'WORKER_LOST',
      error: { code: 'WORKER_LOST', retryable: true },
    });

    // Its record: three attempts, each lost with its worker, then the dead letter.
    const { transitions } = await mesh.status.getTaskHistory({ taskId: poison });
    expect(steps(transitions)).toEqual([
      'TASK_STATE_SUBMITTED#1 SUBMITTED',
      'TASK_STATE_QUEUED#1 SUBMITTED',
      'TASK_STATE_DISPATCHED#1 DISPATCHED',
      'TASK_STATE_RUNNING#1 RUNNING',
      'TASK_STATE_QUEUED#2 WORKER_LOST',
      'TASK_STATE_DISPATCHED#2 DISPATCHED',
      'TASK_STATE_RUNNING#2 RUNNING',
      'TASK_STATE_QUEUED#3 WORKER_LOST',
      'TASK_STATE_DISPATCHED#3 DISPATCHED',
      'TASK_STATE_RUNNING#3 RUNNING',
      'TASK_STATE_DEAD_LETTERED#3 WORKER_LOST',
    ]);
    const runners = transitions
      .filter((t) => t.toState === S.TASK_STATE_RUNNING)
      .map((t) => t.workerId);
    expect(new Set(runners).size).toBe(3);
    const lostBy = transitions.filter((t) => t.reason === 'WORKER_LOST').map((t) => t.workerId);
    expect(lostBy).toEqual(runners);

    // Each attempt really ran, in a worker that then died; no other worker died.
    const runs = log.read().filter((e) => e.taskId === poison && e.event === 'started');
    expect(runs.map((e) => e.attempt)).toEqual([1, 2, 3]);
    await eventually(() => dead.length === 3, 10_000, 'three dead workers');
    expect(dead.map((p) => p.child.pid).sort()).toEqual(runs.map((e) => e.pid).sort());
    expect(dead.map((p) => p.child.exitCode)).toEqual([1, 1, 1]);

    const listed = await mesh.tracker().listDeadLettered({
      pipeline: 'crashy',
      stage: '',
      pageSize: 0,
      pageToken: '',
    });
    expect(listed.tasks.map((t) => t.taskId)).toEqual([poison]);
    expect(listed.tasks[0]!.lastError?.message).toContain('attempt 3 of 3 was lost');
  });

  it('T12: a non-retryable error fails its task after 1 attempt (also one from another copy of the SDK), as does an error code the stage lists as non-retryable', async () => {
    const log = await start();
    await applyPipeline(
      mesh,
      `
name: strict
stages:
  - name: strict
    max_attempts: 3
    backoff: { initial: 200ms, jitter: 0 }
    non_retryable_errors: [BAD_INPUT]
`,
    );
    await mesh.startWorker(FAULT_MODES, ['strict'], [], undefined, log.env);
    await mesh.waitForWorkers(['strict']);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'strict');
    const ids = await submitMany(mesh.router(), [
      jsonEntry('strict', 'poison', { i: 0, mode: 'nonretryable' }),
      jsonEntry('strict', 'listed', { i: 1, mode: 'listed' }),
      jsonEntry('strict', 'foreign', { i: 10, mode: 'foreign-nonretryable' }),
      ...Array.from({ length: 8 }, (_, k) => jsonEntry('strict', `ok${k}`, { i: k + 2 })),
    ]);
    await feed.waitFor(11, 30_000);
    await feed.stop();
    for (const [ref, code, retryable] of [
      ['poison', 'POISON', false],
      ['foreign', 'POISON', false],
      ['listed', 'BAD_INPUT', true],
    ] as const) {
      const id = ids.get(ref)!;
      const { transitions } = await mesh.status.getTaskHistory({ taskId: id });
      expect(steps(transitions).slice(-2)).toEqual([
        'TASK_STATE_RUNNING#1 RUNNING',
        'TASK_STATE_FAILED#1 NON_RETRYABLE_ERROR',
      ]);
      expect(transitions[transitions.length - 1]!.error).toMatchObject({ code, retryable });
      expect(log.read().filter((e) => e.taskId === id && e.event === 'started')).toHaveLength(1);
    }
    for (let k = 0; k < 8; k++) {
      expect(feed.finals.get(ids.get(`ok${k}`)!)).toMatchObject([
        { toState: S.TASK_STATE_SUCCEEDED, attempt: 1 },
      ]);
    }
  });

  it('a task dead-lettered by a failing worker and redriven after the fix ends SUCCEEDED', async () => {
    const log = await start();
    await applyPipeline(
      mesh,
      `
name: fixable
stages:
  - name: fixable
    max_attempts: 2
    backoff: { initial: 200ms, jitter: 0 }
`,
    );
    const broken = await mesh.startWorker(FAULT_MODES, ['fixable'], [], undefined, log.env);
    await mesh.waitForWorkers(['fixable']);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'fixable');
    const ids = await submitMany(mesh.router(), [
      jsonEntry('fixable', 'f', { i: 0, mode: 'fail' }),
    ]);
    const id = ids.get('f')!;
    await feed.waitFor(1, 20_000);
    expect(feed.finals.get(id)![0]).toMatchObject({
      toState: S.TASK_STATE_DEAD_LETTERED,
      attempt: 2,
      reason: 'ATTEMPTS_EXHAUSTED',
      error: { code: 'FLAKY' },
    });

    // The fix: the broken worker goes, a fixed one comes; then the operator redrives.
    broken.p.kill('SIGTERM');
    await broken.p.exited;
    const fixed = await mesh.startWorker(FAULT_MODES, ['fixable'], [], undefined, {
      ...log.env,
      DSAT_TEST_FIXED: '1',
    });
    await mesh.waitForWorkers(['fixable']);
    const tracker = mesh.tracker();
    expect((await tracker.redriveTasks({ taskIds: [id], filter: undefined })).taskIds).toEqual([
      id,
    ]);
    const task = await eventually(
      async () => {
        const t = (await mesh.status.getTask({ taskId: id })).task!;
        return t.state === S.TASK_STATE_SUCCEEDED && t;
      },
      20_000,
      'the redriven task to succeed',
    );
    await feed.stop();
    expect(task.attempt).toBe(1);
    expect(JSON.parse(task.output!.data.toString())).toMatchObject({ by: fixed.p.child.pid });
    const { transitions } = await mesh.status.getTaskHistory({ taskId: id });
    expect(steps(transitions).slice(-5)).toEqual([
      'TASK_STATE_DEAD_LETTERED#2 ATTEMPTS_EXHAUSTED',
      'TASK_STATE_QUEUED#1 REDRIVE',
      'TASK_STATE_DISPATCHED#1 DISPATCHED',
      'TASK_STATE_RUNNING#1 RUNNING',
      'TASK_STATE_SUCCEEDED#1 COMPLETED',
    ]);
    const runs = log.read().filter((e) => e.taskId === id && e.event === 'started');
    expect(runs.map((e) => [e.attempt, e.pid])).toEqual([
      [1, broken.p.child.pid],
      [2, broken.p.child.pid],
      [1, fixed.p.child.pid],
    ]);
    const listed = await tracker.listDeadLettered({
      pipeline: 'fixable',
      stage: '',
      pageSize: 0,
      pageToken: '',
    });
    expect(listed.tasks).toEqual([]);
  });
});
