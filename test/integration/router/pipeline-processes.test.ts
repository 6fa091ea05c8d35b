import crypto from 'node:crypto';
import path from 'node:path';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { StageDoc } from '../../../bench/pipeline3/workload';
import { isCorrectResult, makeTasks } from '../../../bench/pipeline3/workload';
import { PIPELINE3 } from '../../../bench/pipeline3/pipeline';
import { ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';

/**
 * The acceptance run: status, router and each stage's worker in their own processes. 2,000 tasks
 * by default so that CI on two cores stays quick; DSAT_E2E_TASKS=10000 runs the full count.
 */
const N = Number(process.env.DSAT_E2E_TASKS ?? 2000);
const HANDLERS = path.join(__dirname, '../../../bench/pipeline3/handlers.ts');

jest.setTimeout(Math.max(120_000, N * 30));

describe('pipeline3 with every service and stage in its own process', () => {
  const mesh = new ProcessMesh();
  afterAll(() => mesh.stop());

  it(`runs ${N} tasks: every task SUCCEEDED exactly once with the right output`, async () => {
    await mesh.startStatus(['--no-sync']);
    await mesh.startRouter();
    await mesh.savePipeline(PIPELINE3);
    await Promise.all(
      ['stage1', 'stage2', 'stage3'].map((s) =>
        mesh.startWorker(HANDLERS, [s], ['--concurrency', '32']),
      ),
    );
    await mesh.waitForWorkers(['stage1', 'stage2', 'stage3']);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'pipeline3');
    const tasks = makeTasks(N, `e2e-${crypto.randomBytes(3).toString('hex')}`);
    const started = Date.now();
    const ids = await submitMany(
      mesh.router(),
      tasks.map((t) => ({
        clientRef: t.id,
        task: {
          pipeline: 'pipeline3',
          payload: Buffer.from(t.json),
          contentType: 'application/json',
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      })),
    );
    expect(ids.size).toBe(N);
    await feed.waitFor(N, N * 25);
    const seconds = (Date.now() - started) / 1000;
    await feed.stop();
    let lost = 0;
    let duplicates = 0;
    let bad = 0;
    for (const t of tasks) {
      const finals = feed.finals.get(ids.get(t.id)!) ?? [];
      if (finals.length === 0) lost++;
      if (finals.length > 1) duplicates++;
      const f = finals[0];
      if (!f || f.toState !== TaskState.TASK_STATE_SUCCEEDED || !f.payload) {
        if (f) bad++;
        continue;
      }
      const doc = JSON.parse(f.payload.data.toString('utf8')) as StageDoc;
      if (!isCorrectResult(t, doc)) bad++;
    }
    process.stderr.write(
      `pipeline3 e2e: ${N} tasks in ${seconds.toFixed(1)} s (${(N / seconds).toFixed(0)}/s)\n`,
    );
    expect({ lost, duplicates, bad }).toEqual({ lost: 0, duplicates: 0, bad: 0 });
  });
});
