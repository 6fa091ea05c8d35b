import path from 'node:path';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { WorkerPhase } from '../../../gen/dsat/worker/v1/worker';
import { jsonEntry, ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import { within } from '../../helpers/processes';
import { eventually, linear } from '../../helpers/router-mesh';

jest.setTimeout(90_000);

const SLEEPY = path.join(__dirname, '../../fixtures/handlers/sleepy.ts');

function entries(n: number) {
  return Array.from({ length: n }, (_, i) => jsonEntry('sleepy', `t${i}`, { i }));
}

describe('dsat worker, as its own process', () => {
  let mesh: ProcessMesh;
  afterEach(() => mesh?.stop());

  it('reports real counters, and SIGTERM drains: the attempts it holds finish and nothing is retried', async () => {
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startRouter();
    await mesh.savePipeline(linear('sleepy', ['work']));
    const w = await mesh.startWorker(
      SLEEPY,
      ['work'],
      ['--concurrency', '3', '--worker-id', 'proc-1'],
    );
    await mesh.waitForWorkers(['work']);
    const info = mesh.worker(w.address);
    expect(await info.getWorkerInfo({})).toMatchObject({
      workerId: 'proc-1',
      stages: ['work'],
      concurrency: 3,
      inFlight: 0,
      connectedRouter: mesh.routers[0],
      phase: WorkerPhase.WORKER_PHASE_RUNNING,
    });
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'sleepy');
    const ids = await submitMany(mesh.router(), entries(6));
    await feed.waitFor(6, 30_000);
    // The worker counts a result once its ack arrives, just after the store committed it.
    const after = await eventually(
      async () => {
        const i = await info.getWorkerInfo({});
        return i.completed === 6 ? i : undefined;
      },
      5_000,
      'six acks',
    );
    expect({ completed: after.completed, failed: after.failed, inFlight: after.inFlight }).toEqual({
      completed: 6,
      failed: 0,
      inFlight: 0,
    });

    // Three more, and SIGTERM while they run.
    const more = await submitMany(
      mesh.router(),
      entries(3).map((e) => ({ ...e, clientRef: `m${e.clientRef}` })),
    );
    await eventually(
      async () => (await info.getWorkerInfo({})).inFlight === 3,
      10_000,
      'three attempts running',
    );
    w.p.kill('SIGTERM');
    expect(await within(w.p.exited, 20_000, 'drain and exit')).toBe(0);
    await feed.waitFor(9, 10_000);
    await feed.stop();
    for (const taskId of [...ids.values(), ...more.values()]) {
      const finals = feed.finals.get(taskId)!;
      expect(finals.map((t) => t.toState)).toEqual([TaskState.TASK_STATE_SUCCEEDED]);
      const task = (await mesh.status.getTask({ taskId })).task!;
      expect(task.attempt).toBe(1);
    }
  });

  it('DrainWorker stops the credit, lets running attempts finish, and answers with the phase', async () => {
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startRouter();
    await mesh.savePipeline(linear('sleepy', ['work']));
    const w = await mesh.startWorker(SLEEPY, ['work'], ['--concurrency', '2']);
    await mesh.waitForWorkers(['work']);
    const info = mesh.worker(w.address);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'sleepy');
    await submitMany(mesh.router(), entries(2));
    await eventually(
      async () => (await info.getWorkerInfo({})).inFlight === 2,
      10_000,
      'two attempts running',
    );
    const res = await info.drainWorker({ wait: { seconds: 10, nanos: 0 } });
    expect(res).toEqual({ inFlight: 0, phase: WorkerPhase.WORKER_PHASE_STOPPED });
    await feed.waitFor(2, 10_000);
    // Work submitted after the drain waits in the router for another worker.
    await submitMany(
      mesh.router(),
      entries(1).map((e) => ({ ...e, clientRef: 'late' })),
    );
    const load = await mesh.router().getRouterLoad({});
    expect(load.stages.find((s) => s.stage === 'work')).toMatchObject({
      workers: 0,
      queueDepth: 1,
    });
    await feed.stop();
  });
});
