import path from 'node:path';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { ExecEvent } from '../../helpers/exec-log';
import { ExecLog } from '../../helpers/exec-log';
import { jsonEntry, ProcessMesh, submitMany } from '../../helpers/process-mesh';
import { eventually, linear } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(120_000);

const HANDLERS = path.join(__dirname, '../../fixtures/handlers/three-stages.ts');
const N = 400;

/**
 * The router starts a result's next stage before the move is committed. A status service killed
 * in that window must lose no move: the router sends its unanswered writes again, in order, to the
 * restarted service, so every execution stays an attempt the store records.
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
    const log = new ExecLog(tmp.path);
    const executions = () => log.read();
    const m = new ProcessMesh();
    mesh = m;
    await m.startStatus();
    const status = m.procs[0]!;
    await m.startRouter();
    await m.savePipeline(linear('ahead', ['s1', 's2', 's3']));
    const env = log.env;
    const concurrency = ['--concurrency', '32'];
    await m.startWorker(HANDLERS, ['s1'], concurrency, m.routers, env);
    // One stream for s2 and s3: a task's s3 attempt 1 waits there for the Ack of its s2 attempt 1.
    await m.startWorker(HANDLERS, ['s2', 's3'], concurrency, m.routers, env);
    await m.waitForWorkers(['s1', 's2', 's3']);

    const inputs = Array.from({ length: N }, (_, i) => jsonEntry('ahead', `t${i}`, { i }));
    const ids = await submitMany(m.router(), inputs, 50);
    await eventually(
      () => executions().filter((e) => e.stage === 's2').length >= 60,
      30_000,
      'tasks running at s2',
    );
    status.kill('SIGKILL');
    await status.exited;
    // Killed mid-run: work was left at every stage.
    expect(executions().filter((e) => e.stage === 's3').length).toBeLessThan(N / 2);
    await new Promise((r) => setTimeout(r, 500));
    await m.restartStatus();

    const tasks = await eventually(
      async () => {
        const got = await Promise.all(
          [...ids.values()].map((taskId) =>
            m.status.getTask({ taskId }).then(
              (r) => r.task,
              () => undefined,
            ),
          ),
        );
        return got.every((t) => t !== undefined && t.state === TaskState.TASK_STATE_SUCCEEDED)
          ? got
          : undefined;
      },
      60_000,
      'every task SUCCEEDED',
    );
    const problems: string[] = [];
    const byTask = new Map<string, ExecEvent[]>();
    for (const e of executions()) byTask.set(e.taskId, [...(byTask.get(e.taskId) ?? []), e]);
    for (const [ref, taskId] of ids) {
      const i = Number(ref.slice(1));
      const task = tasks.find((t) => t!.taskId === taskId)!;
      const output = JSON.parse(Buffer.from(task.output!.data).toString()) as unknown;
      if (JSON.stringify(output) !== JSON.stringify({ i, done: ['s1', 's2', 's3'] })) {
        problems.push(`${ref}: output ${JSON.stringify(output)}`);
      }
      const history = (await m.status.getTaskHistory({ taskId })).transitions;
      const ends = history.filter((t) => t.toState === TaskState.TASK_STATE_SUCCEEDED);
      if (ends.length !== 1) problems.push(`${ref}: ${ends.length} SUCCEEDED transitions`);
      const recorded = new Set(
        history
          .filter((t) => t.toState === TaskState.TASK_STATE_RUNNING)
          .map((t) => `${t.stage}#${t.attempt}`),
      );
      const ran = new Set<string>();
      for (const e of byTask.get(taskId) ?? []) {
        const key = `${String(e.stage)}#${e.attempt}`;
        if (!recorded.has(key)) problems.push(`${ref}: ran ${key}, which no RUNNING records`);
        if (ran.has(key)) problems.push(`${ref}: ran ${key} twice`);
        ran.add(key);
      }
      for (const key of recorded) {
        if (!ran.has(key)) problems.push(`${ref}: ${key} is recorded RUNNING but never ran`);
      }
    }
    expect(problems).toEqual([]);
  });
});
