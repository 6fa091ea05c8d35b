import path from 'node:path';
import type { Task, Transition } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { ExecEvent } from '../../helpers/exec-log';
import { ExecLog } from '../../helpers/exec-log';
import { jsonEntry, ProcessMesh, submitMany } from '../../helpers/process-mesh';
import { eventually, linear } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(120_000);

const HANDLERS = path.join(__dirname, '../../fixtures/handlers/three-stages.ts');
const N = 400;

/** A 3-stage pipeline over real processes: one worker for s1, one stream for s2 and s3. */
async function startAheadMesh(dir: string) {
  const log = new ExecLog(dir);
  const m = new ProcessMesh();
  await m.startStatus();
  await m.startRouter();
  await m.savePipeline(linear('ahead', ['s1', 's2', 's3']));
  const flags = ['--concurrency', '32', '--max-reconnect-backoff', '500ms'];
  await m.startWorker(HANDLERS, ['s1'], flags, m.routers, log.env);
  // One stream for s2 and s3: a task's s3 attempt 1 waits there for the Ack of its s2 attempt 1.
  await m.startWorker(HANDLERS, ['s2', 's3'], flags, m.routers, log.env);
  await m.waitForWorkers(['s1', 's2', 's3']);
  const inputs = Array.from({ length: N }, (_, i) => jsonEntry('ahead', `t${i}`, { i }));
  const ids = await submitMany(m.router(), inputs, 50);
  // Kill something once tasks run at s2, with work left at every stage.
  await eventually(
    () => log.read().filter((e) => e.stage === 's2').length >= 60,
    30_000,
    'tasks running at s2',
  );
  return { m, log, ids };
}

function allSucceeded(m: ProcessMesh, ids: Map<string, string>): Promise<Task[]> {
  return eventually(
    async () => {
      const got = await Promise.all(
        [...ids.values()].map((taskId) =>
          m.status.getTask({ taskId }).then(
            (r) => r.task,
            () => undefined,
          ),
        ),
      );
      return got.every((t) => t?.state === TaskState.TASK_STATE_SUCCEEDED)
        ? (got as Task[])
        : undefined;
    },
    60_000,
    'every task SUCCEEDED',
  );
}

const attemptOf = (stage: string, attempt: number) => `${stage}#${attempt}`;

/**
 * What went wrong with the finished tasks: outputs, terminal transitions, and executions against
 * the attempts each history records RUNNING. `beforeKill` executions (logged before a router was
 * killed) may be unrecorded or repeated; every attempt requeued as ROUTER_RESTART may have never
 * run. Everything else ran exactly the recorded attempts, each once.
 */
async function checkRuns(
  m: ProcessMesh,
  ids: Map<string, string>,
  tasks: Task[],
  executions: readonly ExecEvent[],
  beforeKill = 0,
): Promise<{ problems: string[]; unrecorded: number; repeated: number; restarted: number }> {
  const problems: string[] = [];
  let unrecorded = 0;
  let repeated = 0;
  let restartedAttempts = 0;
  const byTask = new Map<string, { e: ExecEvent; early: boolean }[]>();
  executions.forEach((e, n) =>
    byTask.set(e.taskId, [...(byTask.get(e.taskId) ?? []), { e, early: n < beforeKill }]),
  );
  for (const [ref, taskId] of ids) {
    const i = Number(ref.slice(1));
    const task = tasks.find((t) => t.taskId === taskId)!;
    const output = JSON.parse(Buffer.from(task.output!.data).toString()) as unknown;
    if (JSON.stringify(output) !== JSON.stringify({ i, done: ['s1', 's2', 's3'] })) {
      problems.push(`${ref}: output ${JSON.stringify(output)}`);
    }
    const history: Transition[] = (await m.status.getTaskHistory({ taskId })).transitions;
    const ends = history.filter((t) => t.toState === TaskState.TASK_STATE_SUCCEEDED);
    if (ends.length !== 1) problems.push(`${ref}: ${ends.length} SUCCEEDED transitions`);
    const recorded = new Set<string>();
    const restarted = new Set<string>();
    history.forEach((t, n) => {
      if (t.toState !== TaskState.TASK_STATE_RUNNING) return;
      recorded.add(attemptOf(t.stage, t.attempt));
      if (history[n + 1]?.reason === 'ROUTER_RESTART') restarted.add(attemptOf(t.stage, t.attempt));
    });
    for (const t of history) {
      if (t.toState === TaskState.TASK_STATE_QUEUED && t.attempt > 1 && t.reason === '') {
        problems.push(`${ref}: attempt ${t.attempt} at ${t.stage} without a reason`);
      }
    }
    const ran = new Set<string>();
    const ranEarly = new Set<string>();
    for (const { e, early } of byTask.get(taskId) ?? []) {
      const key = attemptOf(String(e.stage), e.attempt);
      if (!recorded.has(key)) {
        if (early) unrecorded++;
        else problems.push(`${ref}: ran ${key}, which no RUNNING records`);
      }
      if (ran.has(key)) {
        if (ranEarly.has(key)) repeated++;
        else problems.push(`${ref}: ran ${key} twice`);
      }
      ran.add(key);
      if (early) ranEarly.add(key);
    }
    for (const key of recorded) {
      if (!ran.has(key) && !restarted.has(key)) {
        problems.push(`${ref}: ${key} is recorded RUNNING but never ran`);
      }
    }
    restartedAttempts += restarted.size;
  }
  return { problems, unrecorded, repeated, restarted: restartedAttempts };
}

/**
 * The router starts a result's next stage before the move is committed. A status service killed
 * in that window must lose no move: the router sends its unanswered writes again, in order, to the
 * restarted service, so every execution stays an attempt the store records. A router killed there
 * loses what it had not sent: the task is requeued from what the store holds, and only attempts
 * that ran before the kill may be unrecorded or run again.
 */
describe('next stages dispatched ahead of their commit', () => {
  let mesh: ProcessMesh | undefined;
  const dirs: { cleanup(): void }[] = [];
  afterEach(async () => {
    await mesh?.stop();
    for (const d of dirs.splice(0)) d.cleanup();
  });

  it(`a status service killed -9 mid-run (${N} tasks, 3 stages, s2 and s3 on one worker): every task succeeds once with its three outputs, and every execution is a recorded attempt that ran once`, async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const { m, log, ids } = await startAheadMesh(tmp.path);
    mesh = m;
    const status = m.procs[0]!;
    status.kill('SIGKILL');
    await status.exited;
    expect(log.read().filter((e) => e.stage === 's3').length).toBeLessThan(N / 2);
    await new Promise((r) => setTimeout(r, 500));
    await m.restartStatus();

    const tasks = await allSucceeded(m, ids);
    expect((await checkRuns(m, ids, tasks, log.read())).problems).toEqual([]);
  });

  it(`a router killed -9 mid-run and started again: every task succeeds once with its three outputs; only attempts run before the kill are unrecorded or run again, and every extra attempt has its reason`, async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const { m, log, ids } = await startAheadMesh(tmp.path);
    mesh = m;
    const router = m.procs[1]!;
    const port = m.routers[0]!.split(':').pop()!;
    router.kill('SIGKILL');
    await router.exited;
    // No Assign reaches a worker until the new router: what is logged now ran before the kill.
    const beforeKill = log.read().length;
    expect(log.read().filter((e) => e.stage === 's3').length).toBeLessThan(N / 2);
    await new Promise((r) => setTimeout(r, 500));
    await m.startRouter(['--port', port]);

    const tasks = await allSucceeded(m, ids);
    const runs = await checkRuns(m, ids, tasks, log.read(), beforeKill);
    process.stderr.write(
      `router kill -9: ${beforeKill} executions before it, ${runs.unrecorded} of them unrecorded; ` +
        `${runs.restarted} attempts requeued ROUTER_RESTART; ${runs.repeated} attempts ran again\n`,
    );
    expect(runs.problems).toEqual([]);
  });
});
